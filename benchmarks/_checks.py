"""What every benchmark script does when a case did less than it planned: stop at once, exit
non-zero, and name the case, instead of printing a rate for work that did not happen (a copy
of nothing once read 7,568 MB/s).

    from _checks import expect, expect_ok, fail
    expect("raw_ssh_disk", "bytes received", got, planned)   # got != planned: exit 1
    expect_ok("raw_ssh_disk", res.returncode, res.stderr)     # a failed step: exit 1

The exit is a SystemExit carrying the message, so `finally:` clean-ups (cluster teardown) still
run and Python prints the message to stderr with exit status 1.
"""
from __future__ import annotations

PREFIX = "benchmark case failed"


class CaseFailed(SystemExit):
    """A case moved fewer bytes or requests than planned, or one of its steps failed."""

    def __init__(self, case: str, what: str) -> None:
        self.case, self.what = case, what
        super().__init__(f"{PREFIX}: {case}: {what}")


def fail(case: str, what: str) -> None:
    raise CaseFailed(case, what)


def expect(case: str, what: str, got: object, planned: object) -> None:
    """`got` must equal `planned` (bytes received, requests completed, ...)."""
    if got != planned:
        fail(case, f"{what}: {got} of {planned} planned")


def expect_ok(case: str, returncode: int | None, detail: str = "") -> None:
    """A step's exit status must be 0; `detail` (e.g. its stderr) is quoted, its tail only."""
    if returncode != 0:
        tail = detail.strip()[-800:]
        fail(case, f"exit status {returncode}" + (f": {tail}" if tail else ""))


# Shell pipelines run through bash with this prefix: a failing `cat` or `docker save` on the left
# of a pipe fails the whole command, and an unmatched glob is an error, not the glob itself.
STRICT_SH = "set -euo pipefail; shopt -s failglob; "
