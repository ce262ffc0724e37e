"""Operations of the domain core on an open session; callers own the transaction."""
