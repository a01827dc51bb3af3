from alembic import context

from tokensmith.db.models import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      user_module_prefix="")
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
