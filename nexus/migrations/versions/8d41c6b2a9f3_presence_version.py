"""users.presence_version: the version of the presence that users.status was written from

Revision ID: 8d41c6b2a9f3
Revises: 3f9c2a7d1e40
Create Date: 2026-12-01 15:30:00.000000

"""
from alembic import op
import sqlalchemy as sa


revision = '8d41c6b2a9f3'
down_revision = '3f9c2a7d1e40'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('presence_version', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('presence_version')
