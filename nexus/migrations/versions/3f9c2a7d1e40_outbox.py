"""outbox: events written with the message that they report, published after the commit

Revision ID: 3f9c2a7d1e40
Revises: 75834ca501a3
Create Date: 2026-12-01 12:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


revision = '3f9c2a7d1e40'
down_revision = '75834ca501a3'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'outbox',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('message_id', sa.Integer(), nullable=True),
        sa.Column('emissions', sa.JSON(), nullable=False),
        sa.Column('instance_id', sa.String(length=128), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['message_id'], ['messages.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_message_id'), ['message_id'], unique=False)
        batch_op.create_index('ix_outbox_published_at', ['published_at'], unique=False)
        batch_op.create_index(
            'ix_outbox_unpublished', ['id'], unique=False,
            postgresql_where=sa.text('published_at IS NULL'), sqlite_where=sa.text('published_at IS NULL'),
        )


def downgrade():
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_unpublished')
        batch_op.drop_index('ix_outbox_published_at')
        batch_op.drop_index(batch_op.f('ix_outbox_message_id'))
    op.drop_table('outbox')
