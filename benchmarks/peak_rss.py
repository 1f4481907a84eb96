"""Run a module like `python -m`, then print its peak resident memory as JSON (the last line of stdout).

The peak is VmHWM from /proc/self/status: unlike getrusage's ru_maxrss, Linux resets it at exec, so a
child started from a big parent does not inherit the parent's peak.
"""

import atexit
import json
import resource
import runpy
import sys


def peak_rss_mib() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report() -> None:
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}), flush=True)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "-m":
        sys.exit("usage: peak_rss.py -m MODULE [ARGS...]")
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    atexit.register(report)
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
