"""identities keyed on (provider, issuer, subject); tokens record the certificate they
were opened with

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import xwvm.server.db.models


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

# An X.509 identity made before 0009 does not say which CA signed it: "?" marks it, and
# the login adopts it only for a CA that may sign the name (see auth/x509.py).
UNKNOWN_ISSUER = '?'


def _identities(name: str, with_issuer: bool) -> None:
    columns = [sa.Column('provider', sa.String(length=255), nullable=False)]
    if with_issuer:
        columns.append(sa.Column('issuer', sa.String(length=512), nullable=False))
    columns += [
        sa.Column('subject', sa.String(length=512), nullable=False),
        sa.Column('user_uid', sa.String(length=36), nullable=False),
        sa.Column('created_at', xwvm.server.db.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['user_uid'], ['users.uid'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('provider', *(['issuer'] if with_issuer else []), 'subject'),
    ]
    op.create_table(name, *columns)


def _swap(copy_sql: str, with_issuer: bool) -> None:
    """A primary key changes by copying the table (the same on SQLite and PostgreSQL)."""
    _identities('identities_new', with_issuer)
    op.execute(copy_sql)
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_identities_user_uid'))
    op.drop_table('identities')
    op.rename_table('identities_new', 'identities')
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_identities_user_uid'), ['user_uid'], unique=False)


def upgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('auth_issuer', sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column('auth_serial', sa.String(length=48), nullable=True))
        batch_op.create_index(batch_op.f('ix_tokens_auth_serial'), ['auth_serial'],
                              unique=False)
    _swap("INSERT INTO identities_new (provider, issuer, subject, user_uid, created_at) "
          f"SELECT provider, CASE WHEN provider = 'x509' THEN '{UNKNOWN_ISSUER}' ELSE '' END, "
          "subject, user_uid, created_at FROM identities", True)


def downgrade() -> None:
    # Two CAs' identities of one subject cannot both survive: the oldest is kept.
    _swap("INSERT INTO identities_new (provider, subject, user_uid, created_at) "
          "SELECT provider, subject, user_uid, created_at FROM identities i "
          "WHERE NOT EXISTS (SELECT 1 FROM identities o WHERE o.provider = i.provider "
          "AND o.subject = i.subject AND (o.created_at < i.created_at OR "
          "(o.created_at = i.created_at AND o.issuer < i.issuer)))", False)
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tokens_auth_serial'))
        batch_op.drop_column('auth_serial')
        batch_op.drop_column('auth_issuer')
