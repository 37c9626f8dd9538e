"""PostgreSQL for the MLflow server, least privilege: its own role, which owns the MLflow databases
(the backend store and the auth app's users) and nothing else, and is no superuser and cannot create
roles or databases. Run as the superuser, before migrations; idempotent, and converts a stack whose
server used the superuser (ownership of every object moves to the role)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from mlstack.bootstrap.steps import Outcome, Step, StepResult
from mlstack.errors import ConfigError
from mlstack.settings import Settings

#: Attributes the server's role must not have (PostgreSQL's defaults for a new role, stated).
ROLE_LIMITS = sql.SQL("NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT")


def _connect(settings: Settings, database: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(settings.postgres_dsn(database), autocommit=True)


def ensure_server_role(settings: Settings) -> StepResult:
    """The role exists, logs in with MLFLOW_DB_PASSWORD, and has none of the superuser's powers."""
    role = settings.mlflow_db_user
    if role == settings.postgres_user:
        raise ConfigError(
            f"MLFLOW_DB_USER={role!r} is the superuser POSTGRES_USER: give the MLflow server a role of its own "
            "(the default is mlflow_server) in .env"
        )
    password = settings.mlflow_db_password.get_secret_value()
    with _connect(settings) as connection:
        found = connection.execute(
            "SELECT rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls, "
            "rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s",
            (role,),
        ).fetchone()
        statement = "ALTER ROLE {} WITH LOGIN {} PASSWORD {}" if found else "CREATE ROLE {} WITH LOGIN {} PASSWORD {}"
        connection.execute(sql.SQL(statement).format(sql.Identifier(role), ROLE_LIMITS, sql.Literal(password)))
    if found is None:
        return StepResult("MLflow database role", Outcome.CREATED, f"{role}: login, no superuser powers")
    if found[0]:
        return StepResult("MLflow database role", Outcome.UPDATED, f"{role}: superuser powers taken away")
    return StepResult("MLflow database role", Outcome.PRESENT, f"{role}: login, no superuser powers")


def ensure_databases(settings: Settings) -> StepResult:
    """The backend store and the auth database exist and the role owns them and everything in them."""
    role = settings.mlflow_db_user
    changed: list[str] = []
    with _connect(settings) as connection:
        for database in (settings.postgres_db, settings.mlflow_auth_db):
            owner = connection.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if owner is None:
                connection.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role))
                )
                changed.append(f"{database} created")
            elif owner[0] != role:
                connection.execute(
                    sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), sql.Identifier(role))
                )
                changed.append(f"{database} handed over")
    for database in (settings.postgres_db, settings.mlflow_auth_db):
        moved = _hand_over_objects(settings, database, role)
        if moved:
            changed.append(f"{moved} objects in {database} handed over")
    owned = f"{settings.postgres_db} and {settings.mlflow_auth_db} owned by {role}"
    if not changed:
        return StepResult("MLflow databases", Outcome.PRESENT, owned)
    outcome = Outcome.CREATED if all(change.endswith("created") for change in changed) else Outcome.UPDATED
    return StepResult("MLflow databases", outcome, f"{owned}: {'; '.join(changed)}")


#: Every object in the public schema not yet owned by the role: tables (their sequences follow), views,
#: sequences of their own, types (enums, domains) and functions (MLflow's migrations create trigger
#: functions); the last column is the object's name as ALTER takes it.
_FOREIGN_OBJECTS = """
SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
       ELSE 'TABLE' END, c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND pg_get_userbyid(c.relowner) <> %(role)s
   AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT 'TYPE', t.typname
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd') AND pg_get_userbyid(t.typowner) <> %(role)s
UNION ALL
SELECT 'ROUTINE', p.oid::regprocedure::text
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> %(role)s
"""


def _hand_over_objects(settings: Settings, database: str, role: str) -> int:
    """Make `role` the owner of the public schema and of every object in it; returns how many moved."""
    with _connect(settings, database) as connection, connection.transaction():
        connection.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(role)))
        objects = connection.execute(_FOREIGN_OBJECTS, {"role": role}).fetchall()
        for kind, name in objects:
            # a routine's name comes as PostgreSQL prints its signature (regprocedure): already quoted
            target = sql.SQL(name) if kind == "ROUTINE" else sql.SQL("public.{}").format(sql.Identifier(name))
            connection.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), target, sql.Identifier(role)))
    return len(objects)


def ensure_monitor_role(settings: Settings) -> StepResult:
    """The exporters' role (monitoring) logs in with POSTGRES_MONITOR_PASSWORD, has PostgreSQL's pg_monitor
    (statistics, sizes, replication) and reads the backend store's tables, those the server's migrations
    make later included; it writes nothing, and has no superuser powers."""
    role, server = settings.postgres_monitor_user, settings.mlflow_db_user
    if role in (settings.postgres_user, server):
        raise ConfigError(
            f"POSTGRES_MONITOR_USER={role!r} is also POSTGRES_USER or MLFLOW_DB_USER: the exporters need a role "
            "of their own (the default is mlstack_monitor) in .env"
        )
    password = settings.postgres_monitor_password.get_secret_value()
    with _connect(settings) as connection:
        found = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        statement = "ALTER ROLE {} WITH LOGIN {} PASSWORD {}" if found else "CREATE ROLE {} WITH LOGIN {} PASSWORD {}"
        connection.execute(sql.SQL(statement).format(sql.Identifier(role), ROLE_LIMITS, sql.Literal(password)))
        connection.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(role)))
    with _connect(settings, settings.postgres_db) as connection:
        for statement in (
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {monitor}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {server} IN SCHEMA public GRANT SELECT ON TABLES TO {monitor}",
        ):
            connection.execute(sql.SQL(statement).format(monitor=sql.Identifier(role), server=sql.Identifier(server)))
    outcome = Outcome.PRESENT if found else Outcome.CREATED
    return StepResult("monitoring database role", outcome, f"{role}: pg_monitor, reads {settings.postgres_db}")


DATABASE_STEPS = (
    Step("MLflow database role", ensure_server_role),
    Step("MLflow databases", ensure_databases),
    Step("monitoring database role", ensure_monitor_role),
)
