"""Jobs shared by the command line and the nodes: each declares one schema of options
(:mod:`.schema`), from which the command line, the node's parameters and the YAML defaults are
made; the CLI (:mod:`handypriors_ros.cli`) and the nodes (:mod:`handypriors_ros.ros`) are thin
fronts over them.

- :mod:`.track`: the tracker's options (tracker node and ``handypriors track``), the tracker built
  from them, the offline tracking job;
- :mod:`.refine`: the refinement job (``handypriors refine``, refiner node);
- :mod:`.options`: what they share (object, hand and its naming, inputs, device, initial pose);
- :mod:`.outputs`: the estimates as output messages and bags.

``python -m handypriors_ros.jobs tracker|refine`` prints config/tracker.yaml or
config/refine.yaml.
"""
