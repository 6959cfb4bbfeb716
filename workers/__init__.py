"""Dramatiq workers: broker set-up, thin actors over marketplace services, the scheduler."""
