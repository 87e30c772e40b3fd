"""native apps carry signatures over their manifest (issue 13, hole 3), and the ids of
the keys that signed them, for matching jobs to workers that trust one

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Apps made before 0011 are unsigned: workers refuse their native binaries until an
    # admin signs them (xwvm app sign).
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signatures', sa.JSON(), nullable=False,
                                      server_default='[]'))
    op.create_table('app_signers',
    sa.Column('app_uid', sa.String(length=36), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['app_uid'], ['apps.uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('app_uid', 'key_id')
    )


def downgrade() -> None:
    op.drop_table('app_signers')
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.drop_column('signatures')
