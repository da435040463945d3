"""Default names of the external contract (INTERFACES.md): topics and frames.

Every one of these is only a default: nodes take them as parameters (or remaps), and the
command line and bag tools take them as options. Nothing else in the package spells them.
"""
# Inputs of the tracker
IMAGE_TOPIC = '/camera/camera/color/image_raw'
CAMERA_INFO_TOPIC = '/camera/camera/color/camera_info'
JOINT_STATES_TOPIC = '/joint_states'
TF_TOPIC = '/tf'
TF_STATIC_TOPIC = '/tf_static'
MASK_TOPIC = '/segmentation/object_mask'
INITIAL_POSE_TOPIC = '/handypriors/initial_pose'

# Outputs of the tracker
OBJECT_POSE_TOPIC = '/handypriors/object_pose'
TRACK_TOPIC = '/handypriors/track'
MARKERS_TOPIC = '/handypriors/markers'
DIAGNOSTICS_TOPIC = '/diagnostics'
RESET_SERVICE = '/handypriors/reset'

# Frames
CAMERA_FRAME = 'camera_color_optical_frame'
HAND_ROOT_FRAME = 'ah_base_link'
OBJECT_FRAME = 'handypriors_object'
WORLD_FRAME = 'world'
JOINT_PREFIX = 'ah_'
