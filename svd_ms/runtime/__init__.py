"""Where and how a run executes: device and runtime settings, the msrun cluster, peak memory and
the versions recorded with every result. Imports no model code."""
from .cluster import Cluster, run_scheduler
from .device import detect_device_target, setup_device
from .memory import PeakMemory, format_bytes
from .versions import versions

__all__ = ["Cluster", "run_scheduler", "detect_device_target", "setup_device", "PeakMemory", "format_bytes",
           "versions"]
