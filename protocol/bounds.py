"""Numbers the master, the agents and the CLI agree on, in a module that imports nothing.

The CLI reads its defaults and bounds from here while it builds its parser, so ``saltmarsh
--help`` pays for no schema library; the schemas (protocol/messages.py, master/service/types/)
take the same constants, so each is written once.
"""

# The longest wait a job or a query carries (Interval): a larger one is refused.
MAX_INTERVAL = 1e9
# What the CLI waits past a job's timeout for the agents' TimedOut returns: the agent counts
# the deadline from when it received the job, and its return needs a moment to come back.
RETURN_GRACE_SECONDS = 1.0
# The error type of a return whose agent gave up at the job's deadline (protocol/jobcontrol.py).
TIMED_OUT = "TimedOut"
# A job's deadline on each agent when none is given (``saltmarsh run`` without --timeout).
DEFAULT_RUN_TIMEOUT = 10.0
# Where master.yaml and agent.yaml are read from without -c (both daemons and the CLI).
DEFAULT_CONFIG_DIR = "/etc/saltmarsh"
# A batch (``run -b``): the most agents at once a count may name, and the longest pause after each.
MAX_BATCH_COUNT = 2**31
MAX_BATCH_PAUSE = 86_400.0
# Join tokens (saltmarsh key token --ttl): a token meant for a machine not built within a month
# is better issued when it is.
MAX_TOKEN_TTL = 30 * 24 * 3600.0
# ``virt console-log --lines``: the most lines of a VM's serial console one call returns.
MAX_CONSOLE_LINES = 10_000
