"""Topics: durable message queues behind one small interface (embedded SQLite, Redis Streams)."""

from __future__ import annotations

from inferline.io.topics.base import Consumer, Message, Topic, open_topic

__all__ = ["Consumer", "Message", "Topic", "open_topic"]
