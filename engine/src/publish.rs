//! The publish path: turns changes into tags with the chain and hands them to the hub.
//! Every producer (the HTTP API, event sources) publishes through a [`Publisher`].
//!
//! This is the seam for running several engine nodes: a clustered publisher would append
//! each change to a shared stream and let every node's consumer hand it to its own hub;
//! producers would not change.

use std::sync::Arc;
use std::time::Instant;

use tagcast_plugin_api::{Data, Op, Options};

use crate::chain::Chain;
use crate::hub::Hub;

/// Publishes changes to the local hub. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    chain: Arc<Chain>,
    hub: Arc<Hub>,
}

impl Publisher {
    /// A publisher over `chain` and `hub`.
    pub fn new(chain: Arc<Chain>, hub: Arc<Hub>) -> Publisher {
        Publisher { chain, hub }
    }

    /// The generator chain.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Runs the chain on a change and publishes its tags; returns them. Inserts and deletes
    /// include collection tags, as Oro's change listener does: they change every list of
    /// that kind.
    pub fn publish_change(&self, author: Option<&str>, op: Op, data: &Data) -> Vec<String> {
        let arrived = Instant::now();
        let options = Options {
            collection: matches!(op, Op::Insert | Op::Delete),
            nested: false,
        };
        let tags = self.chain.tags(data, options);
        tracing::trace!(?op, author, tags = ?tags, "change");
        if !tags.is_empty() {
            self.hub.publish(author, &tags, arrived);
        }
        tags
    }

    /// Publishes tags as given.
    pub fn publish_tags<S: AsRef<str>>(&self, author: Option<&str>, tags: &[S]) {
        self.hub.publish(author, tags, Instant::now());
    }
}
