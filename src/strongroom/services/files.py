"""Small files of the account home, written all or nothing: kept so ``secrets`` and ``credentials`` keep their
import path; the helper itself is :func:`strongroom.fsutil.write_durably`."""

from strongroom.fsutil import write_durably

__all__ = ["write_durably"]
