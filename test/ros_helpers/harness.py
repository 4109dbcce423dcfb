"""Cross-process ROS test harness: the depth node in its own process (stderr captured), and a
client in the test process (its own rclpy context on the test's domain) that publishes synthetic
camera frames and collects what the node publishes. Everything goes over real DDS on loopback."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment of a ROS process isolated on ``domain_id`` and loopback."""
    env = dict(os.environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               RCUTILS_COLORIZED_OUTPUT="0", RCUTILS_LOGGING_BUFFERED_STREAM="0",
               PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class NodeProcess:
    """A node started as ``command`` (argv list) with its stderr+stdout lines collected."""

    def __init__(self, command: list[str], domain_id: int, env: dict[str, str] | None = None,
                 cwd: Path = REPO):
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(command, env=env or ros_env(domain_id), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, cwd=cwd)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def depth_node(cls, ros_args: list[str], domain_id: int) -> "NodeProcess":
        return cls([sys.executable, "-m", "ppd_ros.ros.depth_node", "--ros-args", *ros_args], domain_id)

    def _read(self) -> None:
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    def output(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def matching(self, *needles: str) -> list[str]:
        return [line for line in self.output() if all(needle in line for needle in needles)]

    def wait_for_line(self, *needles: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(*needles)
            if found:
                return found[0]
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no output line with {needles} within {timeout} s; output:\n" +
                             "\n".join(self.output()[-40:]))

    def stop(self, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._reader.join(5)
        return self.process.returncode


class RosClient:
    """rclpy node in the test process (own context, own spinning thread) that publishes inputs and
    records every message received on its subscriptions."""

    def __init__(self, domain_id: int, name: str = "ppd_test_client"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._condition = threading.Condition()
        self.received: dict[str, list] = {}
        self._subscriptions: dict[str, object] = {}
        self._service_clients: dict[str, object] = {}
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down while spinning
                if self.context.ok():
                    raise
                return

    def subscribe(self, topic: str, msg_type, reliable: bool = True, depth: int = 50) -> None:
        from ppd_ros.ros.qos import make_qos

        def store(msg, topic=topic):
            with self._condition:
                self.received.setdefault(topic, []).append(msg)
                self._condition.notify_all()

        self._subscriptions[topic] = self.node.create_subscription(
            msg_type, topic, store, make_qos("reliable" if reliable else "best_effort", depth))

    def unsubscribe(self, topic: str) -> None:
        self.node.destroy_subscription(self._subscriptions.pop(topic))

    def publisher(self, topic: str, msg_type, depth: int = 10):
        from ppd_ros.ros.qos import make_qos

        return self.node.create_publisher(msg_type, topic, make_qos("reliable", depth))

    def wait_for(self, topic: str, predicate=lambda msg: True, timeout: float = 15.0):
        """The first message on ``topic`` (already received or arriving) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                for msg in self.received.get(topic, []):
                    if predicate(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching message on {topic} within {timeout} s "
                                         f"({len(self.received.get(topic, []))} received)")
                self._condition.wait(min(left, 0.1))

    def wait_until(self, condition, timeout: float = 15.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.05)

    def wait_until_connected(self, publishers, timeout: float = 20.0) -> None:
        """Until the node subscribes to every input publisher and every subscription of this client
        sees its publisher: the node does no inference while its outputs have no subscriber, so a
        frame sent before discovery completes would get no answer."""
        self.wait_until(lambda: all(pub.get_subscription_count() > 0 for pub in publishers)
                        and all(sub.get_publisher_count() > 0 for sub in self._subscriptions.values()),
                        timeout, "discovery between the node and the test client")
        time.sleep(0.5)  # the two ends of a match see it a moment apart

    def publish_until_answered(self, publisher, msg, topic: str, predicate, timeout: float = 60.0,
                               every: float = 3.0):
        """Publish ``msg`` (again every ``every`` s) until a message matching ``predicate`` arrives on
        ``topic``; for a frame sent right after start-up, when discovery may still be settling."""
        deadline = time.monotonic() + timeout
        while True:
            publisher.publish(msg)
            try:
                return self.wait_for(topic, predicate, min(every, max(deadline - time.monotonic(), 0.1)))
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def call(self, service_type, name: str, request, timeout: float = 30.0, resend_every: float | None = None):
        """Call service ``name`` and return its response. The client is made once per service and
        waited for (a response sent before the client's reply reader matched is lost on a busy
        machine); ``resend_every`` repeats an idempotent request that got no answer."""
        service = self._service_clients.get(name)
        if service is None:
            service = self.node.create_client(service_type, name)
            assert service.wait_for_service(timeout_sec=min(timeout, 20.0)), f"service {name} not available"
            time.sleep(0.5)  # the two ends of a match see it a moment apart
            self._service_clients[name] = service
        deadline = time.monotonic() + timeout
        while True:
            future = service.call_async(request)
            resend_at = time.monotonic() + (resend_every or timeout)
            while not future.done():
                assert time.monotonic() < deadline, f"no answer from {name}"
                if time.monotonic() > resend_at:
                    break
                time.sleep(0.02)
            if future.done():
                return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
        self._spinner.join(5)


def same_stamp(stamp):
    """Predicate: a message whose header stamp equals ``stamp``."""
    return lambda msg: (msg.header.stamp.sec, msg.header.stamp.nanosec) == (stamp.sec, stamp.nanosec)


def make_stamp(index: int):
    """A distinct, readable stamp per test frame (seconds = 1000 + index)."""
    from builtin_interfaces.msg import Time

    return Time(sec=1000 + index, nanosec=123_000_000)


def stamp_text(stamp) -> str:
    return f"{stamp.sec}.{stamp.nanosec:09d}"


def synthetic_frames(count: int, width: int, height: int, seed: int = 3):
    """(rgb uint8 (H, W, 3), CameraModel) rendered from a random synthetic room along a trajectory."""
    from ppd_ros.synthetic import Scene, camera_trajectory, default_camera, render

    scene = Scene.random(seed)
    camera = default_camera(width, height)
    poses = camera_trajectory(count, seed, scene)
    return [render(scene, camera, pose)[0] for pose in poses], camera


def camera_info_msg(camera, stamp, frame_id: str):
    """CameraInfo of a pinhole CameraModel (what a camera driver would publish)."""
    from sensor_msgs.msg import CameraInfo

    info = CameraInfo()
    info.header.stamp = stamp
    info.header.frame_id = frame_id
    info.width, info.height = int(camera.width), int(camera.height)
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = np.asarray(camera.K, dtype=np.float64).reshape(9)
    info.r = np.eye(3).reshape(9)
    P = np.zeros((3, 4))
    P[:, :3] = camera.K
    info.p = P.reshape(12)
    return info


def diagnostic_values(msg, name_part: str = "ppd_depth") -> dict[str, str] | None:
    for status in msg.status:
        if name_part in status.name:
            return {pair.key: pair.value for pair in status.values}
    return None


@contextlib.contextmanager
def running_node(ros_args: list[str], domain_id: int, outputs: dict, image_topic: str = "image",
                 image_type=None, client_name: str = "ppd_test_client", queue_depth: int = 10,
                 startup_timeout: float = 60.0, info_topic: str = "camera_info"):
    """A depth node process and a connected test client: ``outputs`` (topic -> message type) are
    subscribed, ``client.image_pub`` / ``client.info_pub`` publish the inputs. The node must exit
    cleanly at the end."""
    from sensor_msgs.msg import CameraInfo, Image

    node = NodeProcess.depth_node(ros_args, domain_id)
    client = RosClient(domain_id, client_name)
    for topic, msg_type in outputs.items():
        client.subscribe(topic, msg_type, depth=max(50, queue_depth))
    client.image_pub = client.publisher(image_topic, image_type or Image, depth=queue_depth)
    client.info_pub = client.publisher(info_topic, CameraInfo, depth=queue_depth)
    try:
        node.wait_for_line("Output:", timeout=startup_timeout)
        client.wait_until_connected([client.image_pub, client.info_pub])
        yield client, node
    finally:
        client.close()
        assert node.stop() == 0, "\n".join(node.output()[-30:])
