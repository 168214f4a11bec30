"""python -m svd_ms.modules.cpu_kernels: build the CPU kernels for this host (scripts/setup.sh runs it)."""
import sys

from . import build


def main() -> int:
    try:
        path = build()
    except RuntimeError as exc:
        print(f"error: CPU kernels not built: {exc}", file=sys.stderr)
        return 1
    print(f"CPU kernels ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
