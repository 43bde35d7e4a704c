//! The flight retransmission timer (RFC 6347 §4.2.4, §4.2.4.1).

use std::time::{Duration, Instant};

use crate::config::RetransmitConfig;

/// What the timer says when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerAction {
    /// Nothing is due yet.
    Idle,
    /// The current flight must be sent again.
    Retransmit,
    /// The give-up limit (count or total time) is reached: the handshake failed.
    GiveUp,
}

/// Per-flight retransmission timer: 1 s initial, doubling, capped (60 s by default).
///
/// RFC 6347 §4.2.4.1: "Implementations SHOULD use an initial timer value of 1 second ... and
/// double the value at each retransmission, up to no less than the RFC 6298 maximum of 60
/// seconds." The timeout goes back to the initial value for every new flight.
#[derive(Debug, Clone)]
pub(crate) struct RetransmitTimer {
    config: RetransmitConfig,
    /// The current timeout value.
    current: Duration,
    /// When the current flight's timer fires; `None` when not armed.
    deadline: Option<Instant>,
    /// Retransmissions of the current flight.
    retransmits: u32,
    /// When the handshake started (the first flight was armed); `None` before it and once
    /// post-handshake flights began, when `max_handshake_time` no longer applies.
    started: Option<Instant>,
    /// A post-handshake flight was armed: the handshake is over for this timer.
    post_handshake: bool,
}

impl RetransmitTimer {
    pub(crate) fn new(config: RetransmitConfig) -> Self {
        Self {
            current: config.initial,
            config,
            deadline: None,
            retransmits: 0,
            started: None,
            post_handshake: false,
        }
    }

    /// A new flight was sent at `now`: timer back to the initial value and armed.
    pub(crate) fn arm_new_flight(&mut self, now: Instant) {
        if !self.post_handshake {
            self.started.get_or_insert(now);
        }
        self.current = self.config.initial;
        self.retransmits = 0;
        self.deadline = Some(now + self.current);
    }

    /// A post-handshake flight (KeyUpdate, NewSessionTicket, NewConnectionId,
    /// RequestConnectionId) was sent at `now`: armed as any new flight, with its own
    /// budget of `max_retransmits`; `max_handshake_time` bounds the handshake only, not
    /// the session's later flights. RFC 9147 §5.8.4: "Messages of each category can be
    /// sent independently, and reliability is established via independent state
    /// machines, each of which behaves as described in Section 5.8.1." RFC 9147 §8: "As
    /// with other handshake messages with no built-in response, KeyUpdates MUST be
    /// acknowledged."
    pub(crate) fn arm_post_handshake_flight(&mut self, now: Instant) {
        self.post_handshake = true;
        self.started = None;
        self.arm_new_flight(now);
    }

    /// The flight was answered, or no answer is expected: stop the timer.
    pub(crate) fn disarm(&mut self) {
        self.deadline = None;
    }

    /// Retransmissions of the current flight so far.
    pub(crate) fn retransmits(&self) -> u32 {
        self.retransmits
    }

    /// The earliest instant at which [`Self::handle_timeout`] has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let deadline = self.deadline?;
        match (self.started, self.config.max_handshake_time) {
            (Some(start), Some(total)) => Some(deadline.min(start + total)),
            _ => Some(deadline),
        }
    }

    /// Advance the timer to `now`; on `Retransmit` the timer is re-armed with the doubled
    /// (capped) value.
    pub(crate) fn handle_timeout(&mut self, now: Instant) -> TimerAction {
        let Some(deadline) = self.deadline else {
            return TimerAction::Idle;
        };
        if let (Some(start), Some(total)) = (self.started, self.config.max_handshake_time)
            && now >= start + total
        {
            self.deadline = None;
            return TimerAction::GiveUp;
        }
        if now < deadline {
            return TimerAction::Idle;
        }
        if self.retransmits >= self.config.max_retransmits {
            self.deadline = None;
            return TimerAction::GiveUp;
        }
        self.retransmits += 1;
        self.current = (self.current * 2).min(self.config.max);
        self.deadline = Some(now + self.current);
        TimerAction::Retransmit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RetransmitConfig {
        RetransmitConfig {
            max_retransmits: 10,
            max_handshake_time: None,
            ..RetransmitConfig::default()
        }
    }

    #[test]
    fn schedule_is_1_2_4_to_60_seconds() {
        let t0 = Instant::now();
        let mut timer = RetransmitTimer::new(config());
        timer.arm_new_flight(t0);
        let mut intervals = Vec::new();
        let mut last = t0;
        while let Some(deadline) = timer.poll_timeout() {
            // Just before the deadline nothing happens.
            assert_eq!(
                timer.handle_timeout(deadline - Duration::from_millis(1)),
                TimerAction::Idle
            );
            intervals.push((deadline - last).as_secs());
            last = deadline;
            match timer.handle_timeout(deadline) {
                TimerAction::Retransmit => {}
                TimerAction::GiveUp => break,
                TimerAction::Idle => panic!("timer did not fire at its deadline"),
            }
        }
        assert_eq!(intervals, vec![1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
        assert_eq!(timer.poll_timeout(), None);
    }

    #[test]
    fn new_flight_resets_to_initial() {
        let t0 = Instant::now();
        let mut timer = RetransmitTimer::new(config());
        timer.arm_new_flight(t0);
        let d1 = timer.poll_timeout().expect("armed");
        assert_eq!(timer.handle_timeout(d1), TimerAction::Retransmit);
        assert_eq!(timer.retransmits(), 1);
        let t1 = d1 + Duration::from_millis(500);
        timer.arm_new_flight(t1);
        assert_eq!(timer.retransmits(), 0);
        assert_eq!(timer.poll_timeout(), Some(t1 + Duration::from_secs(1)));
        timer.disarm();
        assert_eq!(timer.poll_timeout(), None);
        assert_eq!(
            timer.handle_timeout(t1 + Duration::from_secs(100)),
            TimerAction::Idle
        );
    }

    #[test]
    fn a_post_handshake_flight_is_not_bounded_by_the_handshake_time() {
        let t0 = Instant::now();
        let mut timer = RetransmitTimer::new(RetransmitConfig {
            max_retransmits: 2,
            max_handshake_time: Some(Duration::from_secs(5)),
            ..config()
        });
        timer.arm_new_flight(t0);
        timer.disarm();
        // Long after the handshake's limit, a post-handshake flight gets its own budget.
        let t1 = t0 + Duration::from_secs(100);
        timer.arm_post_handshake_flight(t1);
        assert_eq!(timer.poll_timeout(), Some(t1 + Duration::from_secs(1)));
        assert_eq!(
            timer.handle_timeout(t1 + Duration::from_secs(1)),
            TimerAction::Retransmit
        );
        assert_eq!(
            timer.handle_timeout(t1 + Duration::from_secs(3)),
            TimerAction::Retransmit
        );
        assert_eq!(
            timer.handle_timeout(t1 + Duration::from_secs(7)),
            TimerAction::GiveUp
        );
        // A later re-arm (a path change) of a post-handshake flight stays unbounded.
        let t2 = t1 + Duration::from_secs(100);
        timer.arm_new_flight(t2);
        assert_eq!(timer.poll_timeout(), Some(t2 + Duration::from_secs(1)));
        assert_eq!(
            timer.handle_timeout(t2 + Duration::from_secs(1)),
            TimerAction::Retransmit
        );
    }

    #[test]
    fn total_time_limit_gives_up() {
        let t0 = Instant::now();
        let mut timer = RetransmitTimer::new(RetransmitConfig {
            max_handshake_time: Some(Duration::from_secs(5)),
            ..config()
        });
        timer.arm_new_flight(t0);
        assert_eq!(
            timer.handle_timeout(t0 + Duration::from_secs(1)),
            TimerAction::Retransmit
        );
        assert_eq!(
            timer.handle_timeout(t0 + Duration::from_secs(3)),
            TimerAction::Retransmit
        );
        // Next deadline would be t0+7 s but the total limit is t0+5 s.
        assert_eq!(timer.poll_timeout(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(
            timer.handle_timeout(t0 + Duration::from_secs(5)),
            TimerAction::GiveUp
        );
    }
}
