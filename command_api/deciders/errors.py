"""Domain errors: a command the current state does not allow. Mapped to HTTP at the edge."""


class DomainError(Exception):
    """Base of every rule a command can break; ``code`` names the rule."""

    code = "domain-error"


class CommentNotFound(DomainError):
    code = "comment-not-found"


class CommentIsDeleted(DomainError):
    code = "comment-deleted"


class NotTheAuthor(DomainError):
    code = "not-the-author"


class ParentNotFound(DomainError):
    code = "parent-not-found"


class CommentAlreadyExists(DomainError):
    code = "comment-exists"
