// Package abi encodes the kernel structures the engine writes into a
// stopped process as arguments of injected calls (struct itimerspec,
// sigset_t, struct epoll_event), in the layout of the architecture the
// engine runs on, and the timer arithmetic every restored timer shares.
package abi
