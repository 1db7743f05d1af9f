"""The catalogd search API: a FastAPI application built by :func:`api.app.create_app`.

Every catalogue read goes through a :class:`~api.principal.Principal` resolved by the
server (LDAP bind, OpenID Connect token, or a service token acting for a named user);
the store applies that principal's groups inside its query.
"""
