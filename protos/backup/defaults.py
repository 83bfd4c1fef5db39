"""The defaults the server's config, its command line and backupctl share, each written once."""

# Where the backup server serves, and where backupctl looks for it, unless told otherwise.
SERVER_ADDRESS = "127.0.0.1:50051"
# The deadline of each command the server sends to an agent.
AGENT_DEADLINE_SECONDS = 5.0
# The most commands one session has on the wire at once.
MAX_IN_FLIGHT = 10_000
