"""Before bootstrap changes anything: every service its steps talk to must answer."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_exponential

from mlstack.errors import StackNotReadyError
from mlstack.health import http_ok, postgres_ok, s3_answers
from mlstack.settings import Settings


def require_mlflow_stack(
    settings: Settings,
    storage_only: bool = False,
    command: str = "mlstack bootstrap",
    wait: float = 0.0,
    waiting: Callable[[str], None] = lambda message: None,
    server: bool = True,
) -> None:
    """Raise StackNotReadyError naming the first service of the MLflow stack that does not answer
    (within `wait` seconds, `waiting` told once per service it waits for), and that `command` can
    run once it does. `server=False`: the stores only (an upgrade may find the server stopped)."""
    fix = f"start the stack with `make up` (`mlstack status` shows each service), then run `{command}` again"
    probes = [("The artifact store (S3)", settings.s3_url, lambda: s3_answers(settings.s3_url))]
    if not storage_only:
        probes = [
            (
                "PostgreSQL",
                f"{settings.postgres_host}:{settings.postgres_port} (as {settings.postgres_user})",
                lambda: postgres_ok(settings.postgres_dsn()),
            ),
            *probes,
        ]
        if server:
            probes.append(("the MLflow server", settings.mlflow_url, lambda: http_ok(f"{settings.mlflow_url}/health")))
    for service, where, answers in probes:
        if not _answers_within(answers, wait, partial(waiting, f"{service}: waiting up to {wait:.0f} s at {where}")):
            raise StackNotReadyError(f"{service} does not answer at {where}: {fix}.")


def _answers_within(probe: Callable[[], bool], wait: float, tell: Callable[[], None]) -> bool:
    retrying = Retrying(
        stop=stop_after_delay(wait),
        wait=wait_exponential(multiplier=0.1, max=2),
        retry=retry_if_result(lambda answered: not answered),
        before_sleep=lambda state: state.attempt_number == 1 and tell(),
        retry_error_callback=lambda state: False,
    )
    return retrying(probe)
