"""``python -m mtkd.torchrun ARGS``: torchrun for ``mtkd ... --nproc N``, minus its own report when the workers
stopped on one of mtkd's errors (2: bad input, 3: training diverged, 130: stopped). The workers' message is what
the user reads; torchrun's traceback and failure table would bury it. Any other failure (a bug) keeps torchrun's
report.
"""

from __future__ import annotations

import logging
import sys

#: worker exit codes that are mtkd's own, already explained by the worker's message
MTKD_CODES = (2, 3, 130)


class _QuietMtkdExits(logging.Filter):
    """Drops torchrun's "failed (exitcode: 2) local_rank: ..." line for mtkd's own exit codes, and its "Sending
    process N closing signal SIGTERM" (the other workers being stopped: bookkeeping, not news)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        args = record.args if isinstance(record.args, tuple) else ()
        if msg.startswith("Sending process") and "closing signal" in msg:
            return False
        return not (msg.startswith("failed (exitcode") and args and args[0] in MTKD_CODES)


def main() -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_QuietMtkdExits())
    try:
        torchrun(sys.argv[1:])
    except ChildFailedError as exc:
        _, first = exc.get_first_failure()  # the root cause; the other ranks were stopped after it
        if first.exitcode in MTKD_CODES:
            sys.exit(first.exitcode)
        raise


if __name__ == "__main__":
    main()
