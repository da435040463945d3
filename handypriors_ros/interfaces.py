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

# The tracker node's namespace when none is given (``-r __ns:=/name`` or a launch file's
# namespace moves it). Its outputs, its initial_pose input and its reset service are relative
# names in it; bags (``handypriors track``) hold them resolved in this namespace.
NAMESPACE = '/handypriors'

# Outputs of the tracker
OBJECT_POSE_TOPIC = '/handypriors/object_pose'
TRACK_TOPIC = '/handypriors/track'
MARKERS_TOPIC = '/handypriors/markers'
DIAGNOSTICS_TOPIC = '/diagnostics'
RESET_SERVICE = '/handypriors/reset'
DEBUG_IMAGE_TOPIC = '/handypriors/debug_image'

# Frames
CAMERA_FRAME = 'camera_color_optical_frame'
HAND_ROOT_FRAME = 'ah_base_link'
OBJECT_FRAME = 'handypriors_object'
WORLD_FRAME = 'world'
JOINT_PREFIX = 'ah_'


def resolve(name: str, namespace: str = NAMESPACE) -> str:
    """A topic name as a bag holds it: relative names (``object_pose``) in ``namespace``,
    absolute ones (``/joint_states``) as they are."""
    return name if name.startswith('/') else f'{namespace.rstrip("/")}/{name}'


def relative(name: str) -> str:
    """A default name of this module relative to :data:`NAMESPACE` (``object_pose``)."""
    prefix = NAMESPACE + '/'
    return name[len(prefix):] if name.startswith(prefix) else name
