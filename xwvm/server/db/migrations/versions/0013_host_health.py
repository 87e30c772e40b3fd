"""a host's health for its circuit breaker (issue 15): infrastructure faults in a row,
the last one, and until when it gets no job

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 20:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('fault_streak', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('last_fault', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('paused_until', sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('hosts', schema=None) as batch_op:
        batch_op.drop_column('paused_until')
        batch_op.drop_column('last_fault')
        batch_op.drop_column('fault_streak')
