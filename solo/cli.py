"""What the main_*.py entry points share: Hydra's defaults and how a user's mistake ends a run."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from solo.utils.schema import ConfigError

# keep the working directory and write no Hydra output folders, unless the user asks otherwise
HYDRA_DEFAULTS = ("hydra.run.dir=.", "hydra.output_subdir=null",
                  "hydra/job_logging=disabled", "hydra/hydra_logging=disabled")


def add_hydra_defaults(argv: list[str]) -> None:
    """Append the HYDRA_DEFAULTS that the command line does not set itself."""
    given = {arg.split("=")[0].lstrip("+~") for arg in argv[1:]}
    argv += [arg for arg in HYDRA_DEFAULTS if arg.split("=")[0] not in given]


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """A bad config, an unreadable checkpoint or a missing extra: one line on stderr, exit 2
    (no traceback: the message names the key, file or package to fix)."""
    from solo.utils.checkpoint import CheckpointWriteError
    from solo.zoo import CheckpointError

    try:
        yield
    except CheckpointWriteError as error:  # disk full: not the user's config, but one line too
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)
    except CheckpointError as error:
        print(f"checkpoint error: {error}", file=sys.stderr)
        sys.exit(2)
    except ImportError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
