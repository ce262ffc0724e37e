from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EscalationPolicy(_message.Message):
    __slots__ = ("raise_priority", "renotify_seconds")
    RAISE_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RENOTIFY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    raise_priority: bool
    renotify_seconds: int
    def __init__(self, raise_priority: _Optional[bool] = ..., renotify_seconds: _Optional[int] = ...) -> None: ...

class GetEscalationPolicyRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEscalationPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: EscalationPolicy
    def __init__(self, policy: _Optional[_Union[EscalationPolicy, _Mapping]] = ...) -> None: ...

class UpdateEscalationPolicyRequest(_message.Message):
    __slots__ = ("raise_priority", "renotify_seconds")
    RAISE_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RENOTIFY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    raise_priority: bool
    renotify_seconds: int
    def __init__(self, raise_priority: _Optional[bool] = ..., renotify_seconds: _Optional[int] = ...) -> None: ...

class UpdateEscalationPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: EscalationPolicy
    def __init__(self, policy: _Optional[_Union[EscalationPolicy, _Mapping]] = ...) -> None: ...
