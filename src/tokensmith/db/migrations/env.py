from alembic import context
from sqlalchemy import text

from tokensmith.db.models import Base

engine = context.config.attributes["engine"]
with engine.connect() as connection:
    if connection.dialect.name == "sqlite":
        # Batch migrations rebuild a SQLite table (copy, drop, rename). With foreign keys on, dropping
        # the old ``tokens`` table would cascade into every row that references it (cluster grants,
        # access keys ...). SQLite only changes this setting outside a transaction: before the first.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      user_module_prefix="")
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
    if connection.dialect.name == "sqlite":
        bad = connection.execute(text("PRAGMA foreign_key_check")).all()
        if bad:  # a migration left a dangling reference: fail loudly rather than serve broken data
            raise RuntimeError(f"foreign key check failed after migrating: {len(bad)} dangling reference(s)")
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()
