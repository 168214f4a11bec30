"""Batch jobs: these inputs, these seeds, this rank's share, resume, sidecars, one summary.

- settings: JobSettings (what a job is asked to do) and its checks, output names;
- resume: what earlier runs left (completion and "same settings?"), finished clips of chains;
- records: the job's side of svd_ms.record (settings key, reproduce command, sidecar);
- ranks: agreement across msrun ranks, per-rank results with a heartbeat, the summary;
- batch: BatchJob, the shard loop.
"""
from ..record import file_digest
from ..runtime import Cluster
from .batch import BatchJob, prepare_input
from .console import debug_enabled, log, report_error, warn
from .ranks import HEARTBEAT_S, RANK_FILE, SUMMARY_NAME, RankState
from .records import JobRecords
from .resume import ClipStore, clean_temporaries, previous_outputs
from .settings import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SETUP, JobSettings, check_output_dir,
                       output_paths)

__all__ = ["BatchJob", "JobSettings", "JobRecords", "ClipStore", "RankState", "Cluster", "file_digest",
           "prepare_input", "previous_outputs", "clean_temporaries", "check_output_dir", "output_paths",
           "SUMMARY_NAME", "RANK_FILE", "HEARTBEAT_S", "EXIT_OK", "EXIT_FAILED", "EXIT_SETUP", "EXIT_INTERRUPTED",
           "log", "warn", "report_error", "debug_enabled"]
