"""The EKF's measurements (paper III-E, observation h), behind one protocol and a registry.

- ``base``: the protocol (:class:`Measurement`, :class:`Linearisation`, :class:`StepContext`,
  :class:`TrackingScene`);
- ``registry``: name -> measurement (``TrackerConfig.measurements`` selects them, in order);
- one module per measurement: ``center`` (``'object_center'``), ``contour`` (``'contour'``),
  ``fingertip`` (``'fingertip_contact'``), ``appearance`` (``'appearance'``), ``penetration``
  (``'penetration'``);
- ``roi``: the region of interest they work in and its hard render.
"""
from handypriors_ros.core.tracking.measurements.base import (Linearisation, Linearise,
                                                             Measurement, Residual,
                                                             StepContext, TrackingScene)
from handypriors_ros.core.tracking.measurements.center import (ObjectCenter,
                                                               center_measurement,
                                                               mask_centroid)
from handypriors_ros.core.tracking.measurements.contour import (Contour, ContourMeasurement,
                                                                ObservedField, SampledImage,
                                                                contour_measurement,
                                                                signed_distance_transform)
from handypriors_ros.core.tracking.measurements.fingertip import (
    FingertipContact, fingertip_contact_measurement, query_fingertips)
from handypriors_ros.core.tracking.measurements.penetration import (HandPenetration,
                                                                    deepest_per_link)
from handypriors_ros.core.tracking.measurements.registry import (BUILTIN_MEASUREMENTS,
                                                                 build_measurements,
                                                                 measurement_names,
                                                                 register_measurement,
                                                                 unregister_measurement)
from handypriors_ros.core.tracking.measurements.roi import RoiRender, RoiView, make_roi, render_roi

__all__ = [
    'BUILTIN_MEASUREMENTS', 'Contour', 'ContourMeasurement', 'FingertipContact', 'HandPenetration',
    'Linearisation',
    'Linearise', 'Measurement', 'ObjectCenter', 'ObservedField', 'Residual',
    'RoiRender', 'RoiView', 'SampledImage', 'StepContext', 'TrackingScene', 'build_measurements',
    'center_measurement', 'contour_measurement', 'deepest_per_link',
    'fingertip_contact_measurement',
    'make_roi', 'mask_centroid', 'measurement_names', 'query_fingertips',
    'register_measurement', 'render_roi', 'signed_distance_transform',
    'unregister_measurement',
]
