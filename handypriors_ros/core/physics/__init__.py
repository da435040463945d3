"""Physics priors (paper III-C, III-E): signed distance to the object with NVIDIA Warp, contact
sets, the penetration / sliding / smoothness / acceleration losses (eqs. 3-5, ``losses``), the
quasistatic rigid fit and the quasistatic contact dynamics built on it (eq. 9, ``quasistatic``).

All tensors are batch first; distances are NEGATIVE INSIDE the object; ``T_cam_obj`` maps
object-frame points into the camera optical frame.
"""

from handypriors_ros.core.physics.contacts import (
    DEFAULT_CONTACT_THRESHOLD_M,
    ContactSet,
    find_contacts,
)
from handypriors_ros.core.physics.losses import (
    acceleration_loss,
    penetration_loss,
    sliding_loss,
    smoothness_loss,
)
from handypriors_ros.core.physics.quasistatic import MODES as QUASISTATIC_MODES
from handypriors_ros.core.physics.quasistatic import QuasistaticStep, quasistatic_step
from handypriors_ros.core.physics.rigid_fit import (
    FitStatus,
    RigidFit,
    weighted_rigid_fit,
)
from handypriors_ros.core.physics.sdf import SDFResult, WarpMeshSDF

__all__ = [
    'DEFAULT_CONTACT_THRESHOLD_M',
    'ContactSet',
    'FitStatus',
    'QUASISTATIC_MODES',
    'QuasistaticStep',
    'RigidFit',
    'SDFResult',
    'WarpMeshSDF',
    'acceleration_loss',
    'find_contacts',
    'penetration_loss',
    'quasistatic_step',
    'sliding_loss',
    'smoothness_loss',
    'weighted_rigid_fit',
]
