"""The one user-facing error type."""


class UserError(Exception):
    """A mistake the user can fix: printed as one sentence by the CLI, exit code 2."""
