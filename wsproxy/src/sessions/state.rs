//! A session's lifecycle as one pure function: `apply(state, event)` gives the next state or says
//! the event does not fit. Both the registry and the launcher go through it, so a state can only
//! change in the ways listed here (and the table test covers every pair).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Reserved through the API, never connected.
    Reserved,
    /// The first connection launched the command; waiting for it to listen.
    Starting,
    /// Listening; clients are relayed.
    Running,
    /// The last client left; a reconnect within `linger` re-attaches.
    Lingering,
    /// Ended: the command stopped or exited after it ran.
    Stopped,
    /// Ended: the command did not start, exited before listening, or did not listen in time.
    Failed,
    /// Ended: reserved and never used within `reserve_timeout`.
    Expired,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A client arrived with the session's token.
    Connect,
    /// The command listens.
    Ready,
    /// The command could not start, exited before listening or did not listen in time.
    LaunchFailed,
    /// The last client left (linger starts).
    LastClientLeft,
    /// The command exited on its own.
    Exited,
    /// Stopped by the API, a shutdown, or the end of `linger`.
    Stop,
    /// `reserve_timeout` passed without a connection.
    Expire,
    /// The instance that launched it stopped renewing its lease (shared store): its command died
    /// with it.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTransition {
    pub state: State,
    pub event: Event,
}

impl State {
    pub fn is_ended(self) -> bool {
        matches!(self, State::Stopped | State::Failed | State::Expired)
    }

    /// Whether a client with the token may connect (and, if reserved, launch it).
    pub fn accepts_clients(self) -> bool {
        matches!(
            self,
            State::Reserved | State::Starting | State::Running | State::Lingering
        )
    }
}

pub fn apply(state: State, event: Event) -> Result<State, InvalidTransition> {
    use Event as E;
    use State as S;
    let next = match (state, event) {
        (S::Reserved, E::Connect) => S::Starting,
        (S::Reserved, E::Expire) => S::Expired,
        (S::Reserved, E::Stop) => S::Stopped,
        (S::Starting, E::Connect) => S::Starting,
        (S::Starting, E::Ready) => S::Running,
        (S::Starting, E::LaunchFailed | E::Exited) => S::Failed,
        (S::Starting, E::Stop) => S::Stopped,
        (S::Running, E::Connect) => S::Running,
        (S::Running, E::LastClientLeft) => S::Lingering,
        (S::Running | S::Lingering, E::Exited | E::Stop) => S::Stopped,
        (S::Lingering, E::Connect) => S::Running,
        (S::Starting | S::Running | S::Lingering, E::Lost) => S::Failed,
        (S::Reserved, E::Ready | E::LaunchFailed | E::LastClientLeft | E::Exited)
        | (S::Starting, E::LastClientLeft | E::Expire)
        | (S::Running, E::Ready | E::LaunchFailed | E::Expire)
        | (S::Lingering, E::Ready | E::LaunchFailed | E::LastClientLeft | E::Expire)
        | (S::Reserved, E::Lost)
        | (S::Stopped | S::Failed | S::Expired, _) => return Err(InvalidTransition { state, event }),
    };
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [State; 7] = [
        State::Reserved,
        State::Starting,
        State::Running,
        State::Lingering,
        State::Stopped,
        State::Failed,
        State::Expired,
    ];
    const EVENTS: [Event; 8] = [
        Event::Connect,
        Event::Ready,
        Event::LaunchFailed,
        Event::LastClientLeft,
        Event::Exited,
        Event::Stop,
        Event::Expire,
        Event::Lost,
    ];

    #[test]
    fn every_pair() {
        use Event as E;
        use State as S;
        let allowed = [
            (S::Reserved, E::Connect, S::Starting),
            (S::Reserved, E::Expire, S::Expired),
            (S::Reserved, E::Stop, S::Stopped),
            (S::Starting, E::Connect, S::Starting),
            (S::Starting, E::Ready, S::Running),
            (S::Starting, E::LaunchFailed, S::Failed),
            (S::Starting, E::Exited, S::Failed),
            (S::Starting, E::Stop, S::Stopped),
            (S::Running, E::Connect, S::Running),
            (S::Running, E::LastClientLeft, S::Lingering),
            (S::Running, E::Exited, S::Stopped),
            (S::Running, E::Stop, S::Stopped),
            (S::Lingering, E::Connect, S::Running),
            (S::Lingering, E::Exited, S::Stopped),
            (S::Lingering, E::Stop, S::Stopped),
            (S::Starting, E::Lost, S::Failed),
            (S::Running, E::Lost, S::Failed),
            (S::Lingering, E::Lost, S::Failed),
        ];
        for state in STATES {
            for event in EVENTS {
                let want = allowed
                    .iter()
                    .find(|(s, e, _)| *s == state && *e == event)
                    .map(|(_, _, next)| *next);
                match (apply(state, event), want) {
                    (Ok(next), Some(want)) => assert_eq!(next, want, "{state:?} + {event:?}"),
                    (Err(_), None) => {}
                    (got, want) => panic!("{state:?} + {event:?}: got {got:?}, want {want:?}"),
                }
            }
        }
        assert!(STATES.iter().filter(|s| s.is_ended()).all(|s| !s.accepts_clients()));
    }
}
