// Package celery is the wire format of Celery 5 on a kombu Redis transport:
// the message envelope kombu pushes onto a list, task messages of protocol 2
// and protocol 1, the result documents of the Redis result backend, events and
// pidbox (remote control) messages.
//
// It exists because the worker must leave behind exactly what a Python Celery
// worker would, and no maintained Go library speaks protocol 2 (see the worker
// package). Everything here is pure: no I/O, no clock except where a time is
// passed in. Only JSON content is ever decoded; a pickled body, or any other
// serializer, is refused by its content type before a byte of it is parsed.
package celery
