"""worker accounts made before every worker was confined get confined; app names and
template name:version pairs are unique per owner, not server-wide (no squatting)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 14:30:00
"""
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

# Levels of xwvm.server.rights.Level, as they were when this migration was written.
WORKER, VWORKER, SUPER = 20, 30, 50

# A worker account that a non-super user made with no confinement was treated as public
# (issue 12, hole 1): confine it to its group, else to the user who made it. Unconfined
# workers made by super users stay public, as their maker could have asked for.
_NOT_BY_SUPER = (f"rights IN ({WORKER}, {VWORKER}) AND confine_user_uid IS NULL "
                 "AND confine_group_uid IS NULL AND owner_uid NOT IN "
                 f"(SELECT uid FROM users WHERE rights >= {SUPER})")
CONFINE_TO_GROUP = (f"UPDATE users SET confine_group_uid = group_uid WHERE {_NOT_BY_SUPER} "
                    "AND group_uid IS NOT NULL")
CONFINE_TO_MAKER = f"UPDATE users SET confine_user_uid = owner_uid WHERE {_NOT_BY_SUPER}"

# The server-wide unique constraint on apps.name was created unnamed: PostgreSQL named it
# apps_name_key; on SQLite the batch copy reflects it under this naming convention.
_CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _app_names(unique_per_owner: bool) -> None:
    sqlite = op.get_bind().dialect.name == 'sqlite'
    server_wide = 'uq_apps_name' if sqlite else 'apps_name_key'
    kw = {'naming_convention': _CONVENTION} if sqlite else {}
    with op.batch_alter_table('apps', schema=None, **kw) as batch_op:
        if unique_per_owner:
            batch_op.drop_constraint(server_wide, type_='unique')
            batch_op.create_unique_constraint('uq_apps_owner_name', ['owner_uid', 'name'])
        else:
            batch_op.drop_constraint('uq_apps_owner_name', type_='unique')
            batch_op.create_unique_constraint(server_wide, ['name'])


def upgrade() -> None:
    op.execute(CONFINE_TO_GROUP)
    op.execute(CONFINE_TO_MAKER)
    _app_names(True)
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_constraint('uq_templates_name_version', type_='unique')
        batch_op.create_unique_constraint('uq_templates_owner_name_version',
                                          ['owner_uid', 'name', 'version'])


def downgrade() -> None:
    # Fails, as it should, where two owners now share a name.
    with op.batch_alter_table('templates', schema=None) as batch_op:
        batch_op.drop_constraint('uq_templates_owner_name_version', type_='unique')
        batch_op.create_unique_constraint('uq_templates_name_version', ['name', 'version'])
    _app_names(False)
