"""Agents as the master knows them: key acceptance, presence, join tokens, relayed events, resyncs, enrolment."""
