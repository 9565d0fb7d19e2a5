"""The store's operations written once, in the SQL both backends speak.

SQLite and PostgreSQL share unique keys, ``INSERT ... ON CONFLICT``, ``RETURNING``,
row-value comparisons and subqueries, which is all these modules use; each backend gives
them a :class:`~bot.store.sql.driver.Database` that runs a transaction on its own
connection (:mod:`bot.store.sqlite`, :mod:`bot.store.postgres`) and keeps its own schema
migrations. Statements use ``?`` placeholders and take :class:`~datetime.datetime` values;
a driver adapts both to its database.
"""
