"""Glue between invoke tasks and the library: user errors become messages and exit codes."""
from __future__ import annotations

import functools
import sys

from invoke.exceptions import Exit

from sparkops.base.errors import SparkopsError


def user_errors(body):
    """Turn SparkopsError into a readable message and exit 1, and Ctrl-C into exit 130."""
    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except SparkopsError as exc:
            raise Exit(exc.render(), code=1) from None
        except BrokenPipeError:  # output piped into `head` and the like
            sys.stderr.close()
            raise Exit(code=0) from None
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            raise Exit(code=130) from None
    return wrapper


def csv_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]
