"""Who is asking: staff principals, their roles and the scope each role may see (issue 10).

Pure values and predicates (no I/O): the HTTP layer authenticates a caller and
binds a :class:`~gateway.security.principal.Principal` to the request; every
route asks the scope predicates before it answers.
"""
