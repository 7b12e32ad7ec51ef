//! The member list readers see ([`crate::udp::Snapshot::members`]): sorted by name, held in
//! chunks that successive publications share, so publishing a change copies only the chunks the
//! changed members are in (and one pointer per chunk), not the whole list.

use std::sync::Arc;

use caravan_agent_core::member::Member;

/// Target members per chunk; a chunk splits when it reaches twice this.
pub const CHUNK: usize = 64;

/// Members sorted by name, in shared chunks. Cloning copies one pointer per chunk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MemberList {
    chunks: Vec<Arc<Vec<Member>>>,
    len: usize,
}

impl MemberList {
    /// A list of `members` (sorted here by name).
    pub fn new(mut members: Vec<Member>) -> MemberList {
        members.sort_by(|a, b| a.name.cmp(&b.name));
        members.dedup_by(|a, b| a.name == b.name);
        let len = members.len();
        let mut chunks = Vec::with_capacity(len / CHUNK + 1);
        let mut rest = members.into_iter().peekable();
        while rest.peek().is_some() {
            chunks.push(Arc::new(rest.by_ref().take(CHUNK).collect()));
        }
        MemberList { chunks, len }
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every member, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// The members as one vector.
    pub fn to_vec(&self) -> Vec<Member> {
        self.iter().cloned().collect()
    }

    /// The member called `name`.
    pub fn get(&self, name: &str) -> Option<&Member> {
        let chunk = self.chunks.get(self.chunk_for(name))?;
        let i = chunk.binary_search_by(|m| m.name.as_str().cmp(name)).ok()?;
        chunk.get(i)
    }

    /// The chunk `name` belongs in: the first whose last member is not before it, else the last.
    fn chunk_for(&self, name: &str) -> usize {
        let i = self
            .chunks
            .partition_point(|c| c.last().is_some_and(|m| m.name.as_str() < name));
        i.min(self.chunks.len().saturating_sub(1))
    }

    /// Sets the member called `name` to `member`, or removes it (`None`). Copies only the chunk
    /// it is in when a published list still shares that chunk.
    pub fn set(&mut self, name: &str, member: Option<Member>) {
        if self.chunks.is_empty() {
            if let Some(m) = member {
                self.chunks.push(Arc::new(vec![m]));
                self.len = 1;
            }
            return;
        }
        let at = self.chunk_for(name);
        let chunk = &mut self.chunks[at];
        match (
            chunk.binary_search_by(|m| m.name.as_str().cmp(name)),
            member,
        ) {
            (Ok(i), Some(m)) => Arc::make_mut(chunk)[i] = m,
            (Ok(i), None) => {
                Arc::make_mut(chunk).remove(i);
                self.len -= 1;
            }
            (Err(i), Some(m)) => {
                Arc::make_mut(chunk).insert(i, m);
                self.len += 1;
            }
            (Err(_), None) => return,
        }
        let size = self.chunks[at].len();
        if size == 0 {
            self.chunks.remove(at);
        } else if size >= 2 * CHUNK {
            let tail = Arc::make_mut(&mut self.chunks[at]).split_off(size / 2);
            self.chunks.insert(at + 1, Arc::new(tail));
        }
    }
}

impl<'a> IntoIterator for &'a MemberList {
    type Item = &'a Member;
    type IntoIter = Box<dyn Iterator<Item = &'a Member> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caravan_agent_core::member::MemberStatus;

    fn member(i: u32, status: MemberStatus) -> Member {
        let mut m = Member::none();
        m.name = format!("node{i:05}.global");
        m.status = status;
        m
    }

    #[test]
    fn a_change_copies_only_its_chunk_and_the_list_stays_sorted() {
        let n = 1000u32;
        let mut list = MemberList::new(
            (0..n)
                .rev()
                .map(|i| member(i, MemberStatus::Alive))
                .collect(),
        );
        assert_eq!(list.len(), 1000);
        let published = list.clone();
        list.set(
            &member(500, MemberStatus::Alive).name,
            Some(member(500, MemberStatus::Failed)),
        );
        let shared = list
            .chunks
            .iter()
            .zip(&published.chunks)
            .filter(|(a, b)| Arc::ptr_eq(a, b))
            .count();
        assert_eq!(
            shared,
            list.chunks.len() - 1,
            "one chunk copied, the rest shared"
        );
        assert_eq!(
            published.get("node00500.global").map(|m| m.status),
            Some(MemberStatus::Alive)
        );
        assert_eq!(
            list.get("node00500.global").map(|m| m.status),
            Some(MemberStatus::Failed)
        );

        // Inserts, removals and splits keep it equal to a sorted rebuild.
        let mut expected: Vec<Member> = list.to_vec();
        for i in (n..n + 300).chain([7, 3000, 1]) {
            list.set(
                &member(i, MemberStatus::Alive).name,
                Some(member(i, MemberStatus::Alive)),
            );
            expected.retain(|m| m.name != member(i, MemberStatus::Alive).name);
            expected.push(member(i, MemberStatus::Alive));
        }
        for i in (0..400).step_by(3) {
            list.set(&member(i, MemberStatus::Alive).name, None);
            expected.retain(|m| m.name != member(i, MemberStatus::Alive).name);
        }
        list.set("nobody", None);
        expected.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(list.to_vec(), expected);
        assert_eq!(list.len(), expected.len());
        assert!(
            list.chunks
                .iter()
                .all(|c| !c.is_empty() && c.len() < 2 * CHUNK)
        );
        assert_eq!((&list).into_iter().count(), list.len());
    }
}
