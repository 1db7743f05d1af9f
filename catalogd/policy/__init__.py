"""The data policy: rules, settings, the pure check, the audit and its remediation.

The daemon checks one path with :func:`check_path` (or, with facts it already has, the
pure :meth:`Policy.check`); ``catalogd audit`` calls :func:`audit_tree`.
"""

from __future__ import annotations

from catalogd.policy.audit import AuditResult, audit_tree, check_path, make_policy
from catalogd.policy.check import EntryFacts, Fix, Policy
from catalogd.policy.rules import RULES, Rule
from catalogd.policy.settings import PolicySettings, UserTypeOverride, UserTypePolicy
from catalogd.policy.walker import read_facts

__all__ = [
    "RULES",
    "AuditResult",
    "EntryFacts",
    "Fix",
    "Policy",
    "PolicySettings",
    "Rule",
    "UserTypeOverride",
    "UserTypePolicy",
    "audit_tree",
    "check_path",
    "make_policy",
    "read_facts",
]
