"""A synthetic bag's messages with bad ones in between (the tracker node's bad-input tests).

One of each: an image with a wrong encoding (mono16), a camera_info of another size than its
image, a joint state with NaN, an image going back in time, and a last frame 300 ms after the
last TF sample (missing TF; its joint states are stale too). Good frames are unchanged.
After initialisation (at the first good frame) the tracker answers every bad image but the one
going back in time with a predict-only estimate (:func:`predicted_images`).
"""
from handypriors_ros import interfaces
from handypriors_ros.ros.conversions import ns_to_stamp, stamp_to_ns

from .bag_publisher import ros_type


def bad_frame(template, info_template, stamp, *, encoding='rgb8', info_scale=1):
    """[camera_info, image] at ``stamp`` shaped like the templates (black pixels), optionally
    with another encoding or a camera_info ``info_scale`` times the image's size."""
    img = ros_type('sensor_msgs/msg/Image')()
    img.header.stamp, img.header.frame_id = ns_to_stamp(stamp), template.header.frame_id
    img.height, img.width, img.encoding = template.height, template.width, encoding
    img.step = template.width * (2 if encoding == 'mono16' else 3)
    img.data = bytes(img.step * img.height)
    info = ros_type('sensor_msgs/msg/CameraInfo')()
    info.header = img.header
    info.width = info_template.width * info_scale
    info.height = info_template.height * info_scale
    info.k, info.p, info.r = info_template.k, info_template.p, info_template.r
    info.d, info.distortion_model = info_template.d, info_template.distortion_model
    return [(interfaces.CAMERA_INFO_TOPIC, info), (interfaces.IMAGE_TOPIC, img)]


def bad_messages(messages):
    """``messages`` ([(log_time_ns, topic, rclpy msg)] in log order) with the bad ones added
    (module docstring), each logged 1 us after the message it follows.

    Returns:
        (messages, good image stamps in order).
    """
    image = next(m for _, t, m in messages if t == interfaces.IMAGE_TOPIC)
    info = next(m for _, t, m in messages if t == interfaces.CAMERA_INFO_TOPIC)
    out, good, joints = [], [], 0

    def add(log, items):
        out.extend((log + 1000 * (i + 1), topic, msg) for i, (topic, msg) in enumerate(items))

    for log, topic, msg in messages:
        out.append((log, topic, msg))
        if topic == interfaces.JOINT_STATES_TOPIC:
            joints += 1
            if joints == 10:
                nan = ros_type('sensor_msgs/msg/JointState')()
                nan.header.stamp = ns_to_stamp(stamp_to_ns(msg.header.stamp) + 1000)
                nan.name, nan.position = list(msg.name), list(msg.position)
                nan.position[5] = float('nan')
                add(log, [(topic, nan)])
        if topic != interfaces.IMAGE_TOPIC:
            continue
        good.append(stamp_to_ns(msg.header.stamp))
        if len(good) == 2:
            add(log, bad_frame(image, info, good[-1] + 5_000_000, encoding='mono16'))
        elif len(good) == 3:
            add(log, bad_frame(image, info, good[-1] + 5_000_000, info_scale=2))
        elif len(good) == 4:
            add(log, bad_frame(image, info, good[0]))  # time going backwards
    last = good[-1] + 300_000_000  # after the last TF
    add(max(log for log, _, _ in out), bad_frame(image, info, last))
    return out, good


def predicted_images(good):
    """{stamp: kind} of the bad images of :func:`bad_messages` (``good``: its good stamps) that
    the tracker answers with a predict-only estimate: all but the one going back in time (its
    stamp repeats the first good image, which is answered)."""
    return {good[1] + 5_000_000: 'bad_image', good[2] + 5_000_000: 'bad_camera_info',
            good[-1] + 300_000_000: 'missing_tf'}
