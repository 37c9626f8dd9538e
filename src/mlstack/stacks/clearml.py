"""The ClearML server stack, as upstream clearml-server 2.3.0 ships it (docker only: MongoDB and
Elasticsearch have no native runtime here). infra/clearml/compose.yaml runs the same."""

from mlstack.stacks import Port, Service, Stack

SERVER_IMAGE = "clearml/server:2.3.0"
AGENT_IMAGE = "mlstack/clearml-agent:3.0.3-mlstack.1"

CLEARML_STACK = Stack(
    "clearml",
    (
        Service("mongo", "mongo:7.0.22", health="mongo", data=("mongo-db", "mongo-configdb")),
        Service("redis", "redis:7.4.1", health="redis", data=("redis",)),
        Service("elasticsearch", "elasticsearch:8.17.0", health="/_cluster/health", data=("elasticsearch",)),
        Service(
            "apiserver",
            SERVER_IMAGE,
            waits_for=("mongo", "redis", "elasticsearch"),
            ports=(Port("CLEARML_API_PORT", 8008),),
            health="/debug.ping",
            data=("logs", "fileserver"),
        ),
        Service(
            "fileserver",
            SERVER_IMAGE,
            waits_for=("redis", "apiserver"),
            ports=(Port("CLEARML_FILES_PORT", 8081),),
            health="/",
            data=("logs", "fileserver"),
        ),
        Service(
            "webserver",
            SERVER_IMAGE,
            waits_for=("apiserver", "fileserver"),
            ports=(Port("CLEARML_WEB_PORT", 80),),
            health="/version.json",
        ),
        # deletes the files of deleted tasks and models from the fileserver
        Service(
            "async_delete",
            SERVER_IMAGE,
            waits_for=("apiserver", "fileserver"),
            health="http://fileserver:8081/",
            data=("logs",),
        ),
        Service(
            "agent-services",
            AGENT_IMAGE,
            waits_for=("apiserver", "fileserver"),
            health="/debug.ping",
            data=("agent-cache",),
            profile="agent",
        ),
    ),
)
