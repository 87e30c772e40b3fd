"""drop the write-only columns (issue 14): hosts.vm_capable (matching reads the
hypervisor facts themselves), works.stdin_data_uid (a job's stdin is its work_data row
of role 'stdin'), tokens.kind (a token's kind is in its signed payload), tokens.issued_at
and identities.created_at (written, never read nor shown)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 17:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('vm_capable')
    with op.batch_alter_table('works', schema=None) as batch_op:
        batch_op.drop_column('stdin_data_uid')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('kind')
        batch_op.drop_column('issued_at')
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.drop_column('created_at')


def downgrade() -> None:
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('created_at', sa.DateTime(), nullable=False,
                                      server_default=sa.func.current_timestamp()))
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('issued_at', sa.DateTime(), nullable=False,
                                      server_default=sa.func.current_timestamp()))
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False,
                                      server_default='session'))
    op.execute("UPDATE tokens SET kind = 'delegated' WHERE scope_work_uid IS NOT NULL")
    # What the columns held is gone: a host is marked VM-capable again at its next
    # registration; stdin is filled back from work_data.
    with op.batch_alter_table('works', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stdin_data_uid', sa.String(length=36), nullable=True))
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('vm_capable', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    op.execute("UPDATE works SET stdin_data_uid = (SELECT data_uid FROM work_data"
               " WHERE work_data.work_uid = works.uid AND work_data.role = 'stdin')")
