//! Object-safe mirrors of the capability traits, so an [`App`](crate::App) can hold whichever
//! capabilities its host has behind `Arc<dyn …>` without being generic over each. Every public
//! trait gets a blanket implementation here; nothing outside the crate sees these.

use caravan_agent_core::heartbeat::LastHeartbeat;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use caravan_agent_core::acl::{Acl, AclState, AclWrite, Token};
use caravan_agent_core::jobs::Job;

use crate::ApiError;
use crate::api::{
    AclWriteError, Acls, Debugging, ExportRequest, ForwardedHead, ForwardedRequest, Forwarding,
    Indexed, JobWriteError, JobWriteResult, Jobs, JoinResult, Membership, MonitorRequest, Operator,
    ProfileRequest, ReadError, ReadOptions, Reload, Remote, RestoreError, ServerList, StateAnswer,
    StateQuery,
};
use crate::dto::{HostData, MembersResponse, RaftConfigurationDto};
use crate::monitor::MonitorHub;

/// A boxed, sendable future.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) trait DynMembership: Send + Sync {
    fn members<'a>(
        &'a self,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<MembersResponse, String>>;
    fn join(&self, addresses: Vec<String>) -> BoxFuture<'_, JoinResult>;
    fn force_leave(&self, name: String, prune: bool) -> BoxFuture<'_, Result<(), String>>;
    fn regions(&self) -> Vec<String>;
}

impl<T: Membership> DynMembership for T {
    fn members<'a>(
        &'a self,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<MembersResponse, String>> {
        Box::pin(Membership::members(self, token))
    }
    fn join(&self, addresses: Vec<String>) -> BoxFuture<'_, JoinResult> {
        Box::pin(Membership::join(self, addresses))
    }
    fn force_leave(&self, name: String, prune: bool) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(Membership::force_leave(self, name, prune))
    }
    fn regions(&self) -> Vec<String> {
        Membership::regions(self)
    }
}

pub(crate) trait DynServerList: Send + Sync {
    fn servers(&self) -> Vec<String>;
    fn set_servers(&self, addresses: Vec<String>) -> BoxFuture<'_, Result<(), String>>;
}

impl<T: ServerList> DynServerList for T {
    fn servers(&self) -> Vec<String> {
        ServerList::servers(self)
    }
    fn set_servers(&self, addresses: Vec<String>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(ServerList::set_servers(self, addresses))
    }
}

pub(crate) trait DynAcls: Send + Sync {
    fn resolve_token(&self, token: Option<&str>) -> Result<Acl, String>;
    fn acl_read_dyn(&self, read: &mut dyn FnMut(&AclState));
    fn acl_write(&self, write: AclWrite) -> BoxFuture<'_, Result<Option<Token>, AclWriteError>>;
    fn acl_barrier(&self) -> BoxFuture<'_, Result<(), ReadError>>;
}

impl<T: Acls> DynAcls for T {
    fn resolve_token(&self, token: Option<&str>) -> Result<Acl, String> {
        Acls::resolve_token(self, token)
    }
    fn acl_read_dyn(&self, read: &mut dyn FnMut(&AclState)) {
        Acls::acl_read(self, |state| read(state))
    }
    fn acl_write(&self, write: AclWrite) -> BoxFuture<'_, Result<Option<Token>, AclWriteError>> {
        Box::pin(Acls::acl_write(self, write))
    }
    fn acl_barrier(&self) -> BoxFuture<'_, Result<(), ReadError>> {
        Box::pin(Acls::acl_barrier(self))
    }
}

impl dyn DynAcls + '_ {
    /// Reads the ACL state through the object-safe door; `None` only if the implementation
    /// never called the reader (a broken host).
    pub(crate) fn acl_read<R>(&self, read: impl FnOnce(&AclState) -> R) -> Option<R> {
        let mut read = Some(read);
        let mut out = None;
        self.acl_read_dyn(&mut |state| {
            if let Some(read) = read.take() {
                out = Some(read(state));
            }
        });
        out
    }
}

pub(crate) trait DynJobs: Send + Sync {
    fn register_job(&self, job: Job) -> BoxFuture<'_, Result<JobWriteResult, JobWriteError>>;
    fn deregister_job<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<JobWriteResult>, JobWriteError>>;
    fn read_state(
        &self,
        query: StateQuery,
        options: ReadOptions,
    ) -> BoxFuture<'_, Result<Indexed<StateAnswer>, ReadError>>;
}

impl<T: Jobs> DynJobs for T {
    fn register_job(&self, job: Job) -> BoxFuture<'_, Result<JobWriteResult, JobWriteError>> {
        Box::pin(Jobs::register_job(self, job))
    }
    fn deregister_job<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<JobWriteResult>, JobWriteError>> {
        Box::pin(Jobs::deregister_job(self, id))
    }
    fn read_state(
        &self,
        query: StateQuery,
        options: ReadOptions,
    ) -> BoxFuture<'_, Result<Indexed<StateAnswer>, ReadError>> {
        Box::pin(Jobs::read_state(self, query, options))
    }
}

pub(crate) trait DynDebugging: Send + Sync {
    fn host_data(&self) -> BoxFuture<'_, Result<HostData, String>>;
    fn profile(&self, request: ProfileRequest) -> BoxFuture<'_, Result<Vec<u8>, ApiError>>;
    fn monitor_hub(&self) -> &MonitorHub;
    fn export_logs(&self, request: ExportRequest) -> BoxFuture<'_, Result<Stream, ApiError>>;
}

impl<T: Debugging> DynDebugging for T {
    fn host_data(&self) -> BoxFuture<'_, Result<HostData, String>> {
        Box::pin(Debugging::host_data(self))
    }
    fn profile(&self, request: ProfileRequest) -> BoxFuture<'_, Result<Vec<u8>, ApiError>> {
        Box::pin(Debugging::profile(self, request))
    }
    fn monitor_hub(&self) -> &MonitorHub {
        Debugging::monitor_hub(self)
    }
    fn export_logs(&self, request: ExportRequest) -> BoxFuture<'_, Result<Stream, ApiError>> {
        Box::pin(Debugging::export_logs(self, request))
    }
}

type Stream = tokio::sync::mpsc::Receiver<Bytes>;

type Forwarded = Result<(ForwardedHead, Stream), ApiError>;

pub(crate) trait DynForwarding: Send + Sync {
    fn remote_server(&self, id: &str) -> Result<String, String>;
    fn forward_request<'a>(
        &'a self,
        region: Option<&'a str>,
        request: ForwardedRequest,
        body: Bytes,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Forwarded>;
    fn remote_host_data<'a>(
        &'a self,
        target: Remote<'a>,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<HostData, String>>;
    fn remote_profile<'a>(
        &'a self,
        target: Remote<'a>,
        token: Option<&'a str>,
        request: ProfileRequest,
    ) -> BoxFuture<'a, Result<Vec<u8>, ApiError>>;
    fn remote_monitor<'a>(
        &'a self,
        target: Remote<'a>,
        token: Option<&'a str>,
        request: MonitorRequest,
    ) -> BoxFuture<'a, Result<Stream, ApiError>>;
    fn remote_export<'a>(
        &'a self,
        target: Remote<'a>,
        token: Option<&'a str>,
        request: ExportRequest,
    ) -> BoxFuture<'a, Result<Stream, ApiError>>;
}

impl<T: Forwarding> DynForwarding for T {
    fn remote_server(&self, id: &str) -> Result<String, String> {
        Forwarding::remote_server(self, id)
    }
    fn forward_request<'a>(
        &'a self,
        region: Option<&'a str>,
        request: ForwardedRequest,
        body: Bytes,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Forwarded> {
        Box::pin(Forwarding::forward_request(
            self, region, request, body, token,
        ))
    }
    fn remote_host_data<'a>(
        &'a self,
        target: Remote<'a>,
        token: Option<&'a str>,
    ) -> BoxFuture<'a, Result<HostData, String>> {
        Box::pin(Forwarding::remote_host_data(self, target, token))
    }
    fn remote_profile<'a>(
        &'a self,
        target: Remote<'a>,
        token: Option<&'a str>,
        request: ProfileRequest,
    ) -> BoxFuture<'a, Result<Vec<u8>, ApiError>> {
        Box::pin(Forwarding::remote_profile(self, target, token, request))
    }
    fn remote_monitor<'a>(
        &'a self,
        target: Remote<'a>,
        token: Option<&'a str>,
        request: MonitorRequest,
    ) -> BoxFuture<'a, Result<Stream, ApiError>> {
        Box::pin(Forwarding::remote_monitor(self, target, token, request))
    }
    fn remote_export<'a>(
        &'a self,
        target: Remote<'a>,
        token: Option<&'a str>,
        request: ExportRequest,
    ) -> BoxFuture<'a, Result<Stream, ApiError>> {
        Box::pin(Forwarding::remote_export(self, target, token, request))
    }
}

pub(crate) trait DynOperator: Send + Sync {
    fn status_leader(&self) -> BoxFuture<'_, Result<String, String>>;
    fn status_peers(&self) -> BoxFuture<'_, Result<Vec<String>, String>>;
    fn raft_configuration(&self) -> Result<RaftConfigurationDto, ReadError>;
    fn autopilot_health(&self) -> BoxFuture<'_, Result<crate::dto::AutopilotHealthDto, ReadError>>;
    fn node_heartbeats(&self) -> BoxFuture<'_, Result<Vec<LastHeartbeat>, ReadError>>;
    fn snapshot_save(&self) -> BoxFuture<'_, Result<Indexed<Vec<u8>>, ReadError>>;
    fn snapshot_restore(&self, snapshot: Vec<u8>) -> BoxFuture<'_, Result<(), RestoreError>>;
}

impl<T: Operator> DynOperator for T {
    fn status_leader(&self) -> BoxFuture<'_, Result<String, String>> {
        Box::pin(Operator::status_leader(self))
    }
    fn status_peers(&self) -> BoxFuture<'_, Result<Vec<String>, String>> {
        Box::pin(Operator::status_peers(self))
    }
    fn raft_configuration(&self) -> Result<RaftConfigurationDto, ReadError> {
        Operator::raft_configuration(self)
    }
    fn autopilot_health(&self) -> BoxFuture<'_, Result<crate::dto::AutopilotHealthDto, ReadError>> {
        Box::pin(Operator::autopilot_health(self))
    }
    fn node_heartbeats(&self) -> BoxFuture<'_, Result<Vec<LastHeartbeat>, ReadError>> {
        Box::pin(Operator::node_heartbeats(self))
    }
    fn snapshot_save(&self) -> BoxFuture<'_, Result<Indexed<Vec<u8>>, ReadError>> {
        Box::pin(Operator::snapshot_save(self))
    }
    fn snapshot_restore(&self, snapshot: Vec<u8>) -> BoxFuture<'_, Result<(), RestoreError>> {
        Box::pin(Operator::snapshot_restore(self, snapshot))
    }
}

pub(crate) trait DynKeyring: Send + Sync {
    fn keyring(
        &self,
        op: caravan_agent_core::keyring::KeyringOp,
    ) -> BoxFuture<'_, Result<caravan_agent_core::keyring::KeyringAnswer, String>>;
}

impl<T: crate::api::GossipKeyring> DynKeyring for T {
    fn keyring(
        &self,
        op: caravan_agent_core::keyring::KeyringOp,
    ) -> BoxFuture<'_, Result<caravan_agent_core::keyring::KeyringAnswer, String>> {
        Box::pin(crate::api::GossipKeyring::keyring(self, op))
    }
}

pub(crate) trait DynReload: Send + Sync {
    fn reload(&self) -> BoxFuture<'_, Result<(), String>>;
}

impl<T: Reload> DynReload for T {
    fn reload(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(Reload::reload(self))
    }
}
