"""Storage of the domain core on an open session; callers own the transaction.

SQL only: it reports facts and applies the decisions of server/domain/policy.py, and
makes none of its own (ARCHITECTURE.md, "Who may do what")."""
