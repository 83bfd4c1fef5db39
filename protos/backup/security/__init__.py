"""Who may talk to whom: certificates, TLS, and one authorizing interceptor per process.

    certs.py    the private CA and the certificates it issues (role in OU and key usage)
    tls.py      TLS material from --tls-* files, grpc credentials, when plaintext is allowed
    authz.py    the interceptor: every method allowed by an explicit table, else refused
    client.py   an operator's credentials: CA, client certificate, bearer token

The model: agents accept AgentControl only from a certificate of the backup-server role
issued by their CA (or from their own 0600 unix socket); the server accepts PolicyService
only from an operator certificate or the API token; health and reflection are open.
"""
