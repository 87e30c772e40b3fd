"""objects' lifecycle (issue 23): removed users are kept, marked; apps count the versions
of their binaries; a final job keeps the uid of an app removed since (no foreign key)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

# works.app_uid's foreign key was created unnamed: PostgreSQL named it works_app_uid_fkey;
# on SQLite the batch copy reflects it under this naming convention.
_CONVENTION = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def _works_batch():  # noqa: ANN202 - alembic's batch operations
    sqlite = op.get_bind().dialect.name == 'sqlite'
    kw = {'naming_convention': _CONVENTION} if sqlite else {}
    name = 'fk_works_app_uid_apps' if sqlite else 'works_app_uid_fkey'
    return op.batch_alter_table('works', schema=None, **kw), name


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('removed_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.Integer(), nullable=False,
                                      server_default='1'))
    batch, name = _works_batch()
    with batch as batch_op:
        batch_op.drop_constraint(name, type_='foreignkey')


def downgrade() -> None:
    # Fails, as it should, where a job names an app removed since.
    batch, name = _works_batch()
    with batch as batch_op:
        batch_op.create_foreign_key(name, 'apps', ['app_uid'], ['uid'])
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.drop_column('version')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('removed_at')
