"""hosts get an owner, a group and access rights like every other object

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 08:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owner_uid', sa.String(length=36), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('group_uid', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('access_rights', sa.Integer(), nullable=False,
                                      server_default='493'))  # 0o755: visible, as before
        batch_op.create_index(batch_op.f('ix_hosts_owner_uid'), ['owner_uid'], unique=False)
    # Existing hosts: owned by whoever owns their worker account (the user who enrolled
    # it), in the group the account is confined to, else the account's group.
    op.execute("UPDATE hosts SET owner_uid = (SELECT users.owner_uid FROM users "
               "WHERE users.uid = hosts.worker_user_uid), "
               "group_uid = (SELECT COALESCE(users.confine_group_uid, users.group_uid) "
               "FROM users WHERE users.uid = hosts.worker_user_uid)")


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hosts_owner_uid'))
        batch_op.drop_column('access_rights')
        batch_op.drop_column('group_uid')
        batch_op.drop_column('owner_uid')
