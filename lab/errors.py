"""The one error every lab command reports as a single line and exit status 2."""

from __future__ import annotations


class LabError(RuntimeError):
    """A missing prerequisite or a failed lab step, said in one line that names what is missing and the fix."""
