"""Errors that map to the CLI's exit codes (DESIGN.md: 2 usage/config, 1 job failure)."""


class LakecurateError(Exception):
    """Base class; `exit_code` is what the CLI returns for it."""

    exit_code = 1


class ConfigError(LakecurateError):
    """A bad configuration value or usage: names the key and what is allowed."""

    exit_code = 2

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"config error at '{key}': {message}")


class JobError(LakecurateError):
    """Something is wrong with the job itself (not with a record, which is data)."""

    exit_code = 1
