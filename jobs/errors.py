"""The three outcomes a job can have, as exceptions carrying their exit code."""

from __future__ import annotations

EXIT_OK = 0
EXIT_NOT_CONVERGED = 1
EXIT_BAD_INPUT = 2


class JobError(Exception):
    """A failure to converge: the API is down past its deadline, a build failed, ..."""

    exit_code = EXIT_NOT_CONVERGED


class ConfigError(JobError):
    """Invalid configuration or input. Raised before anything is written."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = problems or []
        full = message if not self.problems else message + ": " + "; ".join(self.problems)
        super().__init__(full)


class TemplateError(JobError):
    """One template could not be converged (a failed build, a provider coderd lacks, ...);
    the other templates still are, and the run exits 1."""


class Terminated(JobError):
    """SIGTERM (Kubernetes activeDeadlineSeconds, a pod eviction): stop now, exit 1."""


class CoderAPIError(JobError):
    """coderd answered with an error. Carries Coder's own message, detail and validations."""

    def __init__(
        self,
        method: str,
        path: str,
        status: int,
        message: str = "",
        detail: str = "",
        validations: list[dict] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        self.detail = detail
        self.validations = validations or []
        super().__init__(self.describe())

    def describe(self) -> str:
        text = f"{self.method} {self.path} -> HTTP {self.status}"
        if self.message:
            text += f": {self.message}"
        if self.detail:
            text += f" ({self.detail})"
        if self.validations:
            text += "; " + "; ".join(f"{v.get('field')}: {v.get('detail')}" for v in self.validations)
        return text

    def field_names(self) -> set[str]:
        return {str(v.get("field")) for v in self.validations}


class CoderUnavailable(JobError):
    """coderd did not answer (or kept answering 5xx) until the deadline."""


class ConcurrentChange(JobError):
    """Someone else changed what a job read before its write landed (a 409 on a create, a stale
    resourceVersion): the job reads the state again and plans again (jobs.retry)."""
