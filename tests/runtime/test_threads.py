"""svd_ms.runtime.threads: the policy's CPU thread counts are set once per process, from the
host's cores, without tripping MindSpore's "can not be set repeatedly"."""
import pytest

from svd_ms import policy
from svd_ms.runtime import threads


class _Conf:
    def __init__(self):
        self.kernel = self.dispatch = None

    def is_op_threads_num_configured(self):
        return self.kernel is not None

    def is_dispatch_threads_num_configured(self):
        return self.dispatch is not None


@pytest.fixture
def fake_mindspore(monkeypatch):
    """MindSpore's two setters and its 'configured' flags, recorded instead of set (the real ones
    can be set once per process, and the test session has set them already)."""
    import mindspore as ms
    from mindspore._c_expression import RuntimeConf
    conf = _Conf()
    monkeypatch.setattr(RuntimeConf, "get_instance", staticmethod(lambda: conf))

    def set_kernel(n):
        if conf.kernel is not None:
            raise RuntimeError("The 'threads_num' can not be set repeatedly.")
        conf.kernel = n

    def set_dispatch(n):
        if conf.dispatch is not None:
            raise RuntimeError("The 'dispatch_threads_num' can not be set repeatedly.")
        conf.dispatch = n
    monkeypatch.setattr(ms.device_context.cpu.op_tuning, "threads_num", set_kernel)
    monkeypatch.setattr(ms.runtime, "dispatch_threads_num", set_dispatch)
    monkeypatch.setattr(threads, "_applied", {})
    monkeypatch.delenv("SVD_MS_CPU_THREADS", raising=False)
    return conf


def test_kernel_threads_follow_the_cores_once(fake_mindspore):
    assert policy.cpu_thread_settings(2) == {"kernel_threads": 2, "dispatch_threads": None}
    assert threads.apply_thread_settings(cores=2) == {"kernel_threads": 2}
    assert fake_mindspore.kernel == 2 and fake_mindspore.dispatch is None
    # a second setup in the same process (tests, the web page) keeps the first and does not raise
    assert threads.apply_thread_settings(cores=8) == {"kernel_threads": 2}


def test_a_users_own_setting_wins(fake_mindspore):
    fake_mindspore.kernel = 7  # set by the user's code before setup_device
    assert threads.apply_thread_settings(cores=2) == {}
    assert fake_mindspore.kernel == 7


def test_environment_override_and_its_error(fake_mindspore, monkeypatch):
    monkeypatch.setenv("SVD_MS_CPU_THREADS", "3")
    assert threads.apply_thread_settings(cores=2) == {"kernel_threads": 3}
    monkeypatch.setattr(threads, "_applied", {})
    fake_mindspore.kernel = None
    monkeypatch.setenv("SVD_MS_CPU_THREADS", "many")
    with pytest.raises(ValueError, match=r"^SVD_MS_CPU_THREADS='many': must be a positive whole number$"):
        threads.apply_thread_settings(cores=2)


def test_other_devices_are_left_alone(fake_mindspore, monkeypatch):
    monkeypatch.setattr(policy, "device_target", lambda: "Ascend")
    assert threads.apply_thread_settings(cores=2) == {}
    assert fake_mindspore.kernel is None


def test_host_cores_is_the_affinity_mask():
    import os
    assert threads.host_cores() == len(os.sched_getaffinity(0))
