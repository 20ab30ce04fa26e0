//! Exit classes and stable error kinds.
//!
//! A caller (a HyperPod lifecycle script, systemd, a fleet dashboard)
//! branches on a handful of outcomes, not on a hundred numbers: every
//! error of the library belongs to one [`ExitClass`], which is the process
//! exit code, and names one stable machine-readable kind (`ticket_malformed`)
//! that keeps the full precision for logs and `--output json`. The codes
//! stay within 1–99 and avoid what shells already mean: 101 (a Rust panic),
//! 124–127 (`timeout(1)`, not executable, not found) and 128 + N (killed by
//! signal N). `docs/exit-codes.md` lists every class and kind; a test keeps
//! it in step with [`classify!`] tables.
//!
//! This module is a leaf: it imports nothing else from the crate.

use serde::Serialize;

/// What kind of failure ended the command, as a caller would act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitClass {
    /// A bug or a failure outside hpk8s's own errors: report it.
    Internal,
    /// The command line is wrong (clap's own code).
    Usage,
    /// The configuration file or a value in it is wrong: fix the config.
    Config,
    /// The inventory, identity files, join ticket or manifests are wrong:
    /// fix the input.
    Input,
    /// The host is not ready for this command (a package missing, a
    /// cluster not formed yet): do the missing step first.
    Precondition,
    /// A dependency (API server, AWS, a mirror, IMDS) is unavailable:
    /// retrying later may succeed.
    Unavailable,
    /// IAM, RBAC or file ownership forbids what was needed.
    Permission,
    /// A wait ran past its deadline.
    Deadline,
    /// hpk8s refused to act on a state that is unsafe to change.
    Refused,
    /// A checksum, CA pin or signature did not verify.
    Verification,
    /// A command or file change on this host failed.
    Host,
}

impl ExitClass {
    /// Every class, in code order.
    pub const ALL: [ExitClass; 11] = [
        ExitClass::Internal,
        ExitClass::Usage,
        ExitClass::Config,
        ExitClass::Input,
        ExitClass::Precondition,
        ExitClass::Unavailable,
        ExitClass::Permission,
        ExitClass::Deadline,
        ExitClass::Refused,
        ExitClass::Verification,
        ExitClass::Host,
    ];

    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitClass::Internal => 1,
            ExitClass::Usage => 2,
            ExitClass::Config => 3,
            ExitClass::Input => 4,
            ExitClass::Precondition => 5,
            ExitClass::Unavailable => 6,
            ExitClass::Permission => 7,
            ExitClass::Deadline => 8,
            ExitClass::Refused => 9,
            ExitClass::Verification => 10,
            ExitClass::Host => 11,
        }
    }

    /// The class's name (`unavailable`), as in JSON and the journal.
    pub fn name(self) -> &'static str {
        match self {
            ExitClass::Internal => "internal",
            ExitClass::Usage => "usage",
            ExitClass::Config => "config",
            ExitClass::Input => "input",
            ExitClass::Precondition => "precondition",
            ExitClass::Unavailable => "unavailable",
            ExitClass::Permission => "permission",
            ExitClass::Deadline => "deadline",
            ExitClass::Refused => "refused",
            ExitClass::Verification => "verification",
            ExitClass::Host => "host",
        }
    }

    /// The class an I/O error suggests: permission for `EACCES`/`EPERM`,
    /// else `default`.
    pub fn of_io(e: &std::io::Error, default: ExitClass) -> ExitClass {
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => ExitClass::Permission,
            std::io::ErrorKind::TimedOut => ExitClass::Deadline,
            _ => default,
        }
    }
}

/// An error that knows its class and kind.
pub trait Classify {
    /// The exit class.
    fn class(&self) -> ExitClass;
    /// The stable kind (`snake_case`, unique across the library).
    fn kind(&self) -> &'static str;
}

/// One documented kind: which error variant it is and its usual class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindRow {
    /// The error type (`RendezvousError`).
    pub error: &'static str,
    /// The variant (`MalformedTicket`).
    pub variant: &'static str,
    /// The kind (`ticket_malformed`).
    pub kind: &'static str,
    /// Its class (for refined kinds, the usual one).
    pub class: ExitClass,
    /// Whether the class is refined at run time from the cause (an API
    /// answer of 403 is `permission`, 503 `unavailable`).
    pub refined: bool,
}

/// Gives an error enum its class and kind per variant, as inherent
/// `class()`, `kind()` and `exit_code()` plus [`Classify`], and a `KINDS`
/// table for the documentation test. The `match` it generates is
/// exhaustive, so a new variant does not compile until it is classified.
///
/// Each arm names a variant with a braced pattern and one of:
/// - `=> Class "kind";` a fixed class;
/// - `=> Class "kind" refine EXPR;` the usual class, refined at run time
///   when `EXPR` (an `Option<ExitClass>` over the pattern's bindings) is
///   `Some`;
/// - `=> via BINDING;` class and kind of a wrapped error.
///
/// ```ignore
/// classify!(RendezvousError {
///     MalformedTicket { .. } => Input "ticket_malformed";
///     Io { source, .. } => Host "rendezvous_io" refine Some(ExitClass::of_io(source, ExitClass::Host));
///     Inner { 0: e } => via e;
/// });
/// ```
macro_rules! classify {
    ($ty:ident { $($body:tt)* }) => {
        $crate::error::class::classify!(@arms $ty [] $($body)*);
    };
    (@arms $ty:ident [$($acc:tt)*] $v:ident { $($p:tt)* } => via $b:ident; $($rest:tt)*) => {
        $crate::error::class::classify!(@arms $ty
            [$($acc)* [$v { $($p)* } (via $b) ()]] $($rest)*);
    };
    (@arms $ty:ident [$($acc:tt)*] $v:ident { $($p:tt)* } => $c:ident $k:literal refine $e:expr; $($rest:tt)*) => {
        $crate::error::class::classify!(@arms $ty
            [$($acc)* [$v { $($p)* } (refine $c $k $e) ([$v $c $k true])]] $($rest)*);
    };
    (@arms $ty:ident [$($acc:tt)*] $v:ident { $($p:tt)* } => $c:ident $k:literal; $($rest:tt)*) => {
        $crate::error::class::classify!(@arms $ty
            [$($acc)* [$v { $($p)* } (fixed $c $k) ([$v $c $k false])]] $($rest)*);
    };
    (@arms $ty:ident [$( [$v:ident { $($p:tt)* } ($($tail:tt)*) ($([$rv:ident $rc:ident $rk:literal $rr:literal])?)] )*]) => {
        #[allow(unused_variables)]
        impl $ty {
            /// The kinds this error's variants name (wrapping variants
            /// take their cause's).
            pub const KINDS: &'static [$crate::error::class::KindRow] = &[
                $($( $crate::error::class::KindRow {
                    error: stringify!($ty),
                    variant: stringify!($rv),
                    kind: $rk,
                    class: $crate::error::class::ExitClass::$rc,
                    refined: $rr,
                }, )?)*
            ];

            /// The exit class (see `docs/exit-codes.md`).
            pub fn class(&self) -> $crate::error::class::ExitClass {
                match self {
                    $( Self::$v { $($p)* } => $crate::error::class::classify!(@class $($tail)*), )*
                }
            }

            /// The stable machine-readable kind.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Self::$v { $($p)* } => $crate::error::class::classify!(@kind $($tail)*), )*
                }
            }

            /// The process exit code: the class's code.
            #[allow(dead_code)] // a private error may only need class and kind
            pub fn exit_code(&self) -> u8 {
                self.class().code()
            }
        }

        impl $crate::error::class::Classify for $ty {
            fn class(&self) -> $crate::error::class::ExitClass {
                <$ty>::class(self)
            }
            fn kind(&self) -> &'static str {
                <$ty>::kind(self)
            }
        }
    };
    (@class via $b:ident) => { $crate::error::class::Classify::class($b) };
    (@class fixed $c:ident $k:literal) => { $crate::error::class::ExitClass::$c };
    (@class refine $c:ident $k:literal $e:expr) => {
        ($e).unwrap_or($crate::error::class::ExitClass::$c)
    };
    (@kind via $b:ident) => { $crate::error::class::Classify::kind($b) };
    (@kind fixed $c:ident $k:literal) => { $k };
    (@kind refine $c:ident $k:literal $e:expr) => { $k };
}
pub(crate) use classify;

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Inner {
        A,
    }
    classify!(Inner {
        A {} => Deadline "inner_a";
    });

    #[derive(Debug)]
    #[allow(dead_code)]
    enum Outer {
        Fixed,
        Refined { source: std::io::Error },
        Wrapped(Inner),
    }
    classify!(Outer {
        Fixed {} => Config "outer_fixed";
        Refined { source } => Host "outer_refined" refine Some(ExitClass::of_io(source, ExitClass::Host));
        Wrapped { 0: inner } => via inner;
    });

    #[test]
    fn classes_have_distinct_codes_clear_of_shell_meanings() {
        let mut codes: Vec<u8> = ExitClass::ALL.iter().map(|c| c.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ExitClass::ALL.len());
        assert!(codes.len() <= 16);
        for c in codes {
            assert!((1..=99).contains(&c), "{c}");
        }
    }

    #[test]
    fn arms_fix_refine_or_delegate() {
        assert_eq!(Outer::Fixed.class(), ExitClass::Config);
        assert_eq!(Outer::Fixed.kind(), "outer_fixed");
        assert_eq!(Outer::Fixed.exit_code(), 3);
        let denied = Outer::Refined {
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(denied.class(), ExitClass::Permission);
        assert_eq!(denied.kind(), "outer_refined");
        let other = Outer::Refined {
            source: std::io::Error::from(std::io::ErrorKind::Other),
        };
        assert_eq!(other.class(), ExitClass::Host);
        let wrapped = Outer::Wrapped(Inner::A);
        assert_eq!(
            (wrapped.class(), wrapped.kind()),
            (ExitClass::Deadline, "inner_a")
        );
        assert_eq!(Outer::KINDS.len(), 2);
        assert!(
            Outer::KINDS
                .iter()
                .any(|r| r.kind == "outer_refined" && r.refined)
        );
        assert_eq!(Inner::KINDS[0].variant, "A");
    }
}
