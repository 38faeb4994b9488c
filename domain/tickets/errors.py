"""Why a support ticket refused a command; every message says what to do instead.

Messages never repeat sealed text back (it is opaque, and may be long): they name fields, ids,
statuses and lengths only.
"""

from __future__ import annotations

from domain import DomainError


class TicketError(DomainError):
    """Any refusal by a support ticket; the subclasses let callers tell them apart."""


class TicketNotOpenedError(TicketError):
    """A command other than opening reached a ticket that does not exist yet."""


class TicketAlreadyOpenedError(TicketError):
    """Opening reached a ticket id that is already taken."""


class TicketMismatchError(TicketError):
    """The command, the ticket and the customer facts it was decided with do not belong
    together: the command layer loaded the wrong stream."""


class InvalidTicketFieldError(TicketError):
    """A field of the command is blank, too long, or a time without a timezone."""


class NotAuthorizedError(TicketError):
    """The actor may not do this: not a current user of the ticket's customer, not current
    vendor staff, or on the wrong side for the command."""


class InvalidAssigneeError(TicketError):
    """The ticket would be assigned to someone who is not current vendor staff."""


class AssigneeUnchangedError(TicketError):
    """The ticket is already assigned to that person."""


class DuplicateMessageError(TicketError):
    """The message id already belongs to a message of this ticket."""


class TicketClosedError(TicketError):
    """The ticket is closed, so it takes no messages or assignments until it is reopened."""


class StatusTransitionError(TicketError):
    """The status change is not in the ticket's table of transitions from its current status;
    the message names the current status and the steps it allows."""
